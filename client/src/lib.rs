//! The ProgLog client library.
