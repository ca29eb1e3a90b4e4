//! Generated data sets for tests and trials: nothing to download, the same bytes every time.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes `per_class` PNGs of seeded noise, `size` pixels square, into one sub-folder per
/// class (`class0`, `class1`, ...) under `root`: an ImageNet-style class folder, each class
/// with its own mean colour (for up to six classes) so that it is learnable. Unlike Fashion-MNIST's exact-zero
/// backgrounds, noise puts no activation exactly on a ReLU or max-pool boundary, so two
/// runs that differ only in floating-point rounding (one device and several) stay close.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("alexnet-noise-doc-{}", std::process::id()));
/// alexnet::synthetic::write_noise_folder(&dir, 2, 3, 16)?;
/// assert_eq!(std::fs::read_dir(dir.join("class1"))?.count(), 3);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_noise_folder(root: &Path, classes: usize, per_class: usize, size: u32) -> Result<()> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    for class in 0..classes {
        let dir = root.join(format!("class{class}"));
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(size, size, |_, _| {
                let mut px = [next() / 2, next() / 2, next() / 2];
                px[class % 3] += 100;
                if class / 3 % 2 == 1 {
                    px[(class + 1) % 3] += 60;
                }
                image::Rgb(px)
            });
            let path = dir.join(format!("{i}.png"));
            img.save(&path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}
