"""Everything that runs Spark: the session, prep, reading tables, the scoring UDF, streaming
scoring, per-task tokenizing to ids, and evaluating a scored table.
"""
