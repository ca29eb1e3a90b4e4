use alex_augment::*;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};
fn lib(img: &Image, size: usize, r: Region) -> Vec<u8> {
    let src = images::ImageRef::new(img.width as u32, img.height as u32, &img.data, PixelType::U8x3).unwrap();
    let mut dst = images::Image::new(r.width as u32, r.height as u32, PixelType::U8x3);
    let side = img.width.min(img.height);
    let sc = |a: usize| (a * side) as f64 / size as f64;
    let (left, top) = ((img.width - side) as f64 / 2.0 + sc(r.left), (img.height - side) as f64 / 2.0 + sc(r.top));
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
        left,
        top,
        sc(r.width),
        sc(r.height),
    );
    Resizer::new().resize(&src, &mut dst, &options).unwrap();
    dst.into_vec()
}
fn main() {
    for (w, h) in [(224, 224), (500, 375), (300, 200)] {
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 37 + (i / 1000) * 11) % 256) as u8).collect();
        let img = Image::new(w, h, 3, data).unwrap();
        let whole = lib(&img, 256, Region { left: 0, top: 0, width: 256, height: 256 });
        let r = Region { left: 13, top: 17, width: 227, height: 227 };
        let part = lib(&img, 256, r);
        let mut diff = 0;
        let mut maxd = 0i32;
        for y in 0..227 {
            for x in 0..227 * 3 {
                let a = part[y * 227 * 3 + x] as i32;
                let b = whole[(y + 17) * 256 * 3 + 13 * 3 + x] as i32;
                if a != b {
                    diff += 1;
                    maxd = maxd.max((a - b).abs());
                }
            }
        }
        let mut mine = Image::new(0, 0, 3, vec![]).unwrap();
        ResizeCentreCrop { size: 256 }.apply_region(&img, r, &mut ResizeBuffers::default(), &mut mine).unwrap();
        let mut mdiff = 0;
        for y in 0..227 {
            for x in 0..227 * 3 {
                if mine.data[y * 227 * 3 + x] != whole[(y + 17) * 256 * 3 + 13 * 3 + x] {
                    mdiff += 1;
                }
            }
        }
        println!("{w}x{h}: fast_image_resize window vs its whole: {diff} bytes differ (max {maxd}); ours: {mdiff}");
    }
    let src = ImageFolder::open("/tmp/imagenette-224/train").unwrap();
    let files: Vec<Vec<u8>> = (0..src.len())
        .map(|i| match src.read(i).unwrap() {
            RawSample::Encoded(b) => b,
            _ => unreachable!(),
        })
        .collect();
    let t = Transform::imagenet_train(Some(PcaNoise {
        eigenvalues: vec![0.2, 0.02, 0.005],
        eigenvectors: vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]],
        sigma: 0.1,
    }));
    let mut scratch = Scratch::new();
    let mut out = vec![0.0f32; t.sample_len()];
    for _ in 0..3 {
        let s = std::time::Instant::now();
        for i in 0..files.len() {
            t.apply(RawSample::Encoded(files[i].clone()), &mut sample_rng(0, 0, i as u64), &mut scratch, &mut out)
                .unwrap();
        }
        println!("{:.0}/s", files.len() as f64 / s.elapsed().as_secs_f64());
    }
}
