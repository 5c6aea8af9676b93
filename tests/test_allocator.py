import os
import platform
import subprocess
import sys

import pytest

from lance_ref.allocator import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_keep_freed_memory_is_accepted_by_glibc():
    assert keep_freed_memory() is GLIBC


def test_importing_lance_ref_before_numpy_quiets_openblas_idle_threads_unless_the_user_chose():
    code = "import os, lance_ref, numpy; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    for chosen, expected in ((None, "4"), ("10", "10")):
        env = environment if chosen is None else {**environment, "OPENBLAS_THREAD_TIMEOUT": chosen}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert run.stdout.strip() == expected


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory needs glibc")
def test_kept_heap_serves_the_next_steps_temporaries_without_page_faults():
    # Two 24 MiB temporaries per "step": 12288 pages each time if they were mapped in afresh.
    code = (
        "import resource, numpy as np\n"
        "from lance_ref.allocator import keep_freed_memory\n"
        "keep_freed_memory()\n"
        "def step_faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    a, b = np.ones(6 << 20, np.float32), np.ones(6 << 20, np.float32)\n"
        "    del a, b\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "step_faults()\n"
        "print(step_faults())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(run.stdout) < 100
