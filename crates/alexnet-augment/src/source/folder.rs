//! ImageNet-style class folders: `root/<class>/*.{jpg,jpeg,png}`.

use super::{RawSample, Source};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Options for [`ImageFolder::open_with`].
#[derive(Debug, Clone)]
pub struct ImageFolderOptions {
    /// File extensions counted as images, compared case-insensitively.
    pub extensions: Vec<String>,
    /// A file mapping folder names to readable class names, one `folder<TAB>name` (or
    /// `folder name`) per line, like ImageNet's `words.txt`. Folders it does not list keep
    /// their folder name.
    pub class_names_file: Option<PathBuf>,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        ImageFolderOptions { extensions: ["jpg", "jpeg", "png"].map(String::from).to_vec(), class_names_file: None }
    }
}

/// Images in one folder per class. Classes are the sub-folders sorted by name (as
/// torchvision's `ImageFolder` does); files within a class are sorted by name too, so the
/// sample order is reproducible.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    sizes: Vec<u64>,
    labels: Vec<u32>,
    folders: Vec<String>,
    class_names: Vec<String>,
}

impl ImageFolder {
    /// Lists `root/<class>/*.{jpg,jpeg,png}` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(root, &ImageFolderOptions::default())
    }

    /// Lists the data set under `root`. Errors if `root` has no class folders, or if any
    /// class folder holds no image files.
    pub fn open_with(root: impl AsRef<Path>, options: &ImageFolderOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut folders = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
            let entry = entry.map_err(|e| Error::io(&root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                folders.push(name);
            }
        }
        if folders.is_empty() {
            return Err(Error::EmptyDataset { root });
        }
        folders.sort();
        let is_image = |p: &Path| {
            p.extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .is_some_and(|e| options.extensions.iter().any(|x| x.eq_ignore_ascii_case(&e)))
        };
        let (mut files, mut sizes, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (label, folder) in folders.iter().enumerate() {
            let dir = root.join(folder);
            let mut class_files = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && is_image(&path) && path.is_file() {
                    let size = entry.metadata().map_err(|e| Error::io(&path, e))?.len();
                    class_files.push((path, size));
                }
            }
            if class_files.is_empty() {
                return Err(Error::EmptyClass { folder: dir });
            }
            class_files.sort();
            for (path, size) in class_files {
                files.push(path);
                sizes.push(size);
                labels.push(label as u32);
            }
        }
        let mut class_names = folders.clone();
        if let Some(words) = &options.class_names_file {
            let text = std::fs::read_to_string(words).map_err(|e| Error::io(words, e))?;
            let map: std::collections::HashMap<&str, &str> = text
                .lines()
                .filter_map(|line| {
                    let line = line.trim();
                    let split = line.find(['\t', ' '])?;
                    Some((&line[..split], line[split..].trim()))
                })
                .collect();
            for name in &mut class_names {
                if let Some(readable) = map.get(name.as_str()) {
                    *name = (*readable).to_string();
                }
            }
        }
        Ok(ImageFolder { root, files, sizes, labels, folders, class_names })
    }

    /// The path of sample `index`.
    pub fn path(&self, index: usize) -> &Path {
        &self.files[index]
    }

    /// The class folder names, indexed by label.
    pub fn folders(&self) -> &[String] {
        &self.folders
    }
}

impl Source for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn read(&self, index: usize) -> Result<RawSample, String> {
        std::fs::read(&self.files[index]).map(RawSample::Encoded).map_err(|e| format!("read failed: {e}"))
    }
    fn describe(&self, index: usize) -> String {
        self.files[index].display().to_string()
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        let mut bytes = b"image-folder\n".to_vec();
        for ((path, size), label) in self.files.iter().zip(&self.sizes).zip(&self.labels) {
            let rel = path.strip_prefix(&self.root).unwrap_or(path);
            bytes.extend_from_slice(format!("{}\t{size}\t{label}\n", rel.display()).as_bytes());
        }
        bytes
    }
    fn data_dir(&self) -> Option<PathBuf> {
        Some(self.root.clone())
    }
}
