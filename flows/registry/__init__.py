"""The model registry: immutable, verifiable versions at any fsspec location.

versions      publish, list and resolve versions and aliases; `latest`; load a verified model
aliases       named aliases (production, ...) and the append-only, checksum-chained history
promotion     promote and roll back an alias; the champion/challenger promotion rule
manifest      manifest.json: provenance and the sha256 of every file, verified on load
store         reaching a registry through fsspec (local folder, s3://, memory://), its lock
onnx_export   a netcore network as an ONNX model, checked against netcore
provenance    where a model came from: code version, package versions, clock
"""
