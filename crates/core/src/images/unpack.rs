//! Unpacking an image into snapshots (filled in with the diff module).
