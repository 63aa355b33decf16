"""Checks a colcon install of snn_control (called by .ci/colcon_check; not a test module).

Run with the project's Python (.venv, which has torch, pybullet, rclpy) in an environment
where the workspace's install/setup.bash has been sourced, from a directory that has no
models/ or config/ of its own:

    python .ci/colcon_verify.py --install WS/install --source WS/src/snn_control --mode plain

What is expected comes from the source tree, so a file added to models/, config/ or
launch/ is expected in the install too: every console script of setup.py (and at least
the ones the launch file and the docs name) under lib/snn_control/, each config,
launch file, URDF and every file of every shipped model under share/snn_control/, the
package marker in the ament index, package.xml; then, through ament_index_python and
snn_control.paths as the nodes use them, that shipped data resolves from the install,
the default controller checkpoint loads and the RViz URDF is there. Prints every
problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

PKG = "snn_control"
# At least these (setup.py may add more): the CLI and the nodes the launch file starts.
REQUIRED_SCRIPTS = {"snn-control", "panda_sim", "snn_controller", "goal_teleop", "recorder", "trainer"}
MODEL_FILES = ("model.pt", "io_spec.json", "config.yaml")  # what load_model needs

problems: list[str] = []


def missing(what: str) -> None:
    problems.append(what)
    print(f"  MISSING/BROKEN: {what}", flush=True)


def ok(what: str) -> None:
    print(f"  ok: {what}", flush=True)


def console_scripts(setup_py: Path) -> set[str]:
    return set(re.findall(r'"([\w.-]+)\s*=\s*snn_control[\w.]*:\w+"', setup_py.read_text()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--install", required=True, type=Path, help="the workspace's install/ (merged layout not used)")
    ap.add_argument("--source", required=True, type=Path, help="the package source in the workspace (src/snn_control)")
    ap.add_argument("--mode", choices=["plain", "symlink"], required=True)
    args = ap.parse_args()
    prefix = (args.install / PKG).resolve()
    src = args.source.resolve()
    share = prefix / "share" / PKG
    lib = prefix / "lib" / PKG
    print(f"checking the {args.mode} install {prefix}")

    # --- files -------------------------------------------------------------------------
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PKG
    (ok if marker.is_file() else missing)(f"package marker {marker.relative_to(prefix)}")
    (ok if (share / "package.xml").is_file() else missing)("share/snn_control/package.xml")

    scripts = console_scripts(src / "setup.py")
    launch_files = sorted(src.glob("launch/*.launch.py"))
    launch_exes: set[str] = set()
    for lf in launch_files:
        text = lf.read_text()
        launch_exes |= set(re.findall(rf'package="{PKG}",\s*executable="([^"]+)"', text))
        for parts in re.findall(r'os\.path\.join\(share,\s*((?:"[^"]+",?\s*)+)\)', text):
            rel = Path(*re.findall(r'"([^"]+)"', parts))
            (ok if (share / rel).is_file() else missing)(f"share/snn_control/{rel} (used by launch/{lf.name})")
    if not launch_files:
        missing("launch/*.launch.py in the source tree")
    for name in sorted(REQUIRED_SCRIPTS - scripts):
        missing(f"console script {name!r} in setup.py entry_points")
    for name in sorted(scripts | REQUIRED_SCRIPTS | launch_exes):
        exe = lib / name
        good = exe.is_file() and os.access(exe, os.X_OK)
        (ok if good else missing)(f"executable lib/snn_control/{name}"
                                  + (" (started by the launch file)" if name in launch_exes else ""))

    expected = [*launch_files, *sorted(src.glob("config/*.yaml")), *sorted(src.glob("config/*.rviz")),
                *sorted(src.glob("urdf/*.urdf")), *sorted(src.glob("urdf/*.xacro"))]
    model_dirs = sorted(d for d in src.glob("models/*") if d.is_dir())
    if not model_dirs:
        missing("models/*/ in the source tree")
    for d in model_dirs:
        for name in MODEL_FILES:
            if not (d / name).is_file():
                missing(f"source models/{d.name}/{name}")
        expected += sorted(f for f in d.iterdir() if f.is_file())
    absent = [f.relative_to(src) for f in expected if not (share / f.relative_to(src)).is_file()]
    for rel in absent:
        missing(f"share/snn_control/{rel}")
    ok(f"{len(expected) - len(absent)}/{len(expected)} data files (launch, config, urdf, "
       f"{len(model_dirs)} models) under share/snn_control")

    # --- resolution, as the nodes do it --------------------------------------------------
    from ament_index_python.packages import get_package_share_directory

    try:
        found = Path(get_package_share_directory(PKG)).resolve()
        (ok if found == share else missing)(f"ament index share directory {found} (want {share})")
    except Exception as exc:  # noqa: BLE001
        missing(f"get_package_share_directory({PKG!r}): {exc!r} (was install/setup.bash sourced?)")

    import snn_control
    from snn_control import paths

    module = Path(snn_control.__file__).resolve()
    if args.mode == "plain":
        # the package imported is the installed copy, and data comes from share/ through the index
        (ok if prefix in module.parents else missing)(f"snn_control imported from the install ({module})")
        (ok if paths.data_root().resolve() == share else missing)(
            f"snn_control.paths.data_root() = {paths.data_root()} (want {share})")
    else:
        # --symlink-install: the module is the workspace source, its data root that source tree
        (ok if src in module.parents else missing)(f"snn_control imported from the workspace source ({module})")
        (ok if paths.data_root().resolve() == src else missing)(
            f"snn_control.paths.data_root() = {paths.data_root()} (want {src})")
    root = paths.data_root().resolve()
    bad = len(problems)
    for d in model_dirs:
        r = paths.resolve(f"models/{d.name}")
        if not (all((r / name).is_file() for name in MODEL_FILES) and root in r.resolve().parents):
            missing(f"paths.resolve('models/{d.name}') = {r}: not a model directory under {root}")

    import yaml

    checkpoints: set[str] = set()
    for cfg in sorted(src.glob("config/*.yaml")):
        r = paths.resolve(f"config/{cfg.name}")
        if not (r.is_file() and root in r.resolve().parents):
            missing(f"paths.resolve('config/{cfg.name}') = {r}: no such file under {root}")
        text = cfg.read_text()
        checkpoints |= set(re.findall(r"^\s*(?:checkpoint|init_from):\s*(models/[\w./-]+)", text, re.M))
        yaml.safe_load(text)
    for d in model_dirs:
        checkpoints |= set(re.findall(r"^\s*init_from:\s*(models/[\w./-]+)", (d / "config.yaml").read_text(), re.M))
    for ck in sorted(checkpoints):
        if not paths.resolve(ck).is_dir():
            missing(f"checkpoint/init_from {ck!r} named in the configs does not resolve")
    if len(problems) == bad:
        ok(f"paths.resolve() finds the {len(model_dirs)} models, the {len(list(src.glob('config/*.yaml')))} "
           f"configs and the checkpoints they name ({', '.join(sorted(checkpoints))}) under {root}")

    import importlib

    load_model = None
    for module_name in ("snn_control.models.checkpoint", "snn_control.training.checkpoint"):  # new, old home
        try:
            load_model = importlib.import_module(module_name).load_model
            break
        except ModuleNotFoundError:
            pass
    params = yaml.safe_load(paths.resolve("config/panda_reach.yaml").read_text())
    default = params["snn_controller"]["ros__parameters"]["checkpoint"]
    try:
        if load_model is None:
            raise ImportError("no snn_control.models.checkpoint.load_model (nor training.checkpoint)")
        _, policy, spec, _ = load_model(paths.resolve(default))
        ok(f"load_model() of the controller's default checkpoint {default!r} ({type(policy).__name__})")
    except Exception as exc:  # noqa: BLE001
        missing(f"load_model({default!r}) from the install: {exc!r}")

    from snn_control.envs.panda import urdf_for_rviz

    urdf = urdf_for_rviz()
    (ok if "<robot" in urdf and "file://" in urdf else missing)(
        "urdf_for_rviz(): the Panda URDF with file:// meshes for RViz/robot_state_publisher")

    # --- entry points: every console script loads from this install, the CLI runs --------
    dist = importlib.metadata.distribution(PKG)
    eps = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    loaded = []
    for name in sorted(scripts | REQUIRED_SCRIPTS):
        if name not in eps:
            missing(f"console_scripts entry {name!r} in the installed {PKG} metadata ({dist.locate_file('')})")
            continue
        try:
            if callable(eps[name].load()):
                loaded.append(name)
            else:
                missing(f"entry point {name} = {eps[name].value} is not callable")
        except Exception as exc:  # noqa: BLE001
            missing(f"entry point {name} = {eps[name].value} does not import: {exc!r}")
    if loaded:
        ok(f"entry points of {PKG} {dist.version} ({dist.locate_file('')}) import: {', '.join(loaded)}")
    # The script's shebang is the Python that ran colcon; here colcon has its own venv, so
    # the script runs under the project's Python, as `ros2 run` would under the ROS one.
    cli = subprocess.run([sys.executable, str(lib / "snn-control"), "--help"], capture_output=True, text=True,
                         timeout=120)
    (ok if cli.returncode == 0 and "usage" in cli.stdout else missing)(
        f"lib/snn_control/snn-control --help (exit {cli.returncode}) {cli.stderr[-500:]}")

    if problems:
        print(f"\ncolcon {args.mode} install of {PKG}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"colcon {args.mode} install of {PKG}: everything in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
