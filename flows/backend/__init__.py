"""The backend service (``da3 backend``): a resident model serving reconstruct-flow jobs over HTTP, and its client."""
