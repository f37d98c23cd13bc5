"""The Dockerfile as BuildKit reads it: parse, expand, stages, the stage graph, and the rewrite.

Pure and engine-free, one pass after another: text → instructions (`parse`), words (`lex`,
`mounts`) → stages and their edges (`stages`) → the graph a set of targets needs (`graph`) →
the Dockerfile that is actually built (`rewrite`).
"""
