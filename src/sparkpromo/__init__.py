"""sparkpromo: personalised promotions from shop behaviour logs with Spark ALS on Delta Lake."""

__version__ = "0.1.0"
