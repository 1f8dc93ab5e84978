//! Creating layers (filled in next).
