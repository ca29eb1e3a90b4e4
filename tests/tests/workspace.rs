//! Cross-crate checks of the workspace layout.

use std::path::Path;

/// The embedded default data set is present with its checksums.
#[test]
fn embedded_fashion_mnist_is_shipped() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/fashion-mnist");
    for file in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "SHA256SUMS",
        "LICENSE",
    ] {
        assert!(root.join(file).is_file(), "missing {}", root.join(file).display());
    }
}
