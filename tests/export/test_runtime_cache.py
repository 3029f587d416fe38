"""The runtime cache's staging folders: what killed exports leave is cleaned up."""

import os
import subprocess
import sys
import time


def test_staging_folders_of_gone_processes_are_removed_at_once(tmp_path):
    from utils.export import auto_runtime

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    mine = auto_runtime._machine_prefix()
    folders = {
        "dead": tmp_path / f"{mine}{dead_pid}-abc",
        "running": tmp_path / f"{mine}{os.getpid()}-def",
        "other machine, young": tmp_path / f"{auto_runtime.STAGING_PREFIX}elsewhere-1-ghi",
        "other machine, old": tmp_path / f"{auto_runtime.STAGING_PREFIX}elsewhere-2-jkl",
        "unnumbered, young": tmp_path / f"{mine}x-mno",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "model.xml").write_text("partial")
    old = time.time() - auto_runtime.STAGING_MAX_AGE_S - 60
    os.utime(folders["other machine, old"], (old, old))
    staging, root, problems = auto_runtime._staging_folder([tmp_path])
    assert staging.name.startswith(auto_runtime._staging_prefix()) and root == tmp_path and not problems
    left = {name for name, folder in folders.items() if folder.exists()}
    assert left == {"running", "other machine, young", "unnumbered, young"}
    assert staging.is_dir()
