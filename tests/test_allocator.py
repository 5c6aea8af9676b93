import platform

from lance_ref.allocator import keep_freed_memory


def test_keep_freed_memory_is_accepted_by_glibc():
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
