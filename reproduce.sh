python -m reproduce "$@"
