//! Backend-generic test bodies (in progress).
