"""OCI and Docker image formats: manifests, blobs, layer spools and the merged view of an image."""
