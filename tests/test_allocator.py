import os
import platform
import subprocess
import sys

from lance_ref.allocator import keep_freed_memory


def test_keep_freed_memory_is_accepted_by_glibc():
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


def test_importing_lance_ref_before_numpy_quiets_openblas_idle_threads_unless_the_user_chose():
    code = "import os, lance_ref, numpy; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    for chosen, expected in ((None, "4"), ("10", "10")):
        env = environment if chosen is None else {**environment, "OPENBLAS_THREAD_TIMEOUT": chosen}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert run.stdout.strip() == expected
