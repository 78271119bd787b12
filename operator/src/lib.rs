//! The ProgLog operator.
