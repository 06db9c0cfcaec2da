from setuptools import find_packages, setup

STAGES = ("generate", "ingest", "clean", "features", "train", "recommend", "measure", "run", "report", "explain",
          "forget", "doctor")

# Spark itself, for running outside a Spark platform (a laptop, CI, `scripts/setup.sh`). delta-spark 4.0.1 is built for
# the Spark 4.0 line (Scala 2.13); keep the pair in step.
LOCAL = ["pyspark==4.0.1", "delta-spark==4.0.1"]
# A Spark Connect client: pyspark's own `connect` extra, and delta-spark for its Python client (sparkpromo imports
# `delta.tables`); pinned as the `local` pair.
CONNECT = ["pyspark[connect]==4.0.1", "delta-spark==4.0.1"]

# benchmarks/quality.py and speed.py: the implicit library's ALS as a single-machine peer
PEER = ["implicit>=0.7,<0.8", "threadpoolctl>=3", "scipy>=1.10"]

setup(
    name="sparkpromo",
    version="0.1.0",
    description="Personalised promotions from shop behaviour logs with Spark ALS on Delta Lake",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"sparkpromo": ["log4j2.properties"]},
    python_requires=">=3.11,<3.13",
    # What the code needs on top of a Spark runtime. A platform (Databricks, a cluster's spark-submit) brings its own
    # pyspark and Delta: requiring them here would lay a second Spark over the runtime's.
    install_requires=[
        "pyyaml>=6.0,<7",
        "numpy>=1.26",
    ],
    extras_require={
        "local": LOCAL,
        "connect": CONNECT,  # `--remote sc://...` / SPARK_REMOTE
        "report": ["matplotlib>=3.8"],
        "mlflow": ["mlflow-skinny>=2.9"],
        "bench": [*PEER, "matplotlib>=3.8"],
        # The peer harness has a test of its own (tests/test_benchmarks.py), so the suite needs the peer too.
        # The suite runs Spark locally and starts a Spark Connect server; `wheel` lets it build the wheel offline.
        "test": [*LOCAL, *CONNECT, "wheel>=0.40", "pytest>=8", "pytest-xdist>=3.5", "chispa==0.12.0", "ruff",
                 "matplotlib>=3.8", "mlflow-skinny>=2.9", *PEER],
    },
    entry_points={
        "console_scripts": [
            "sparkpromo=sparkpromo.cli:main",
            # One entry point per stage, so a Databricks python_wheel_task can name it directly.
            *(f"sparkpromo-{s}=sparkpromo.cli:{s}_main" for s in STAGES),
        ],
    },
)
