"""The model registry: immutable, verifiable versions at any fsspec location.

versions      publish, list and resolve versions; the `latest` alias; load a verified model
manifest      manifest.json: provenance and the sha256 of every file, verified on load
store         reaching a registry through fsspec (local folder, s3://, memory://)
onnx_export   a netcore network as an ONNX model, checked against netcore
provenance    where a model came from: code version, package versions, clock
"""
