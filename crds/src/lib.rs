//! ProgLog custom resource types.
