//! Cross-crate tests of the workspace. The tests live in `tests/tests/`;
//! this library is empty on purpose.
