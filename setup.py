from glob import glob

from setuptools import find_packages, setup

package_name = "snn_control"


def shipped_models():
    """Each models/<name>/ installs to share/snn_control/models/<name>/ (metrics.jsonl too:
    `snn-control eval` of an installed model reads it for eval.json's training figures)."""
    out = []
    for d in sorted(glob("models/*/")):
        files = [f for f in glob(d + "*") if f.endswith((".pt", ".json", ".jsonl", ".yaml", ".png"))]
        out.append((f"share/{package_name}/{d.rstrip('/')}", files))
    return out


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "studies", "studies.*", "bench", "bench.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{package_name}/urdf", glob("urdf/*.urdf") + glob("urdf/*.xacro")),
        *shipped_models(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="snn_control developers",
    maintainer_email="snn-control@example.org",
    description="Spiking neural network controllers for torque-controlled robot arms (ROS 2).",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": [
        "snn-control = snn_control.cli:main",
        "panda_sim = snn_control.nodes.panda_sim:main",
        "snn_controller = snn_control.nodes.snn_controller:main",
        "goal_teleop = snn_control.nodes.goal_teleop:main",
        "recorder = snn_control.nodes.recorder:main",
        "trainer = snn_control.nodes.trainer:main",
    ]},
)
