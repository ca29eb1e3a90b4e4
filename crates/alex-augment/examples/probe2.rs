use alex_augment::*;
fn main() {
    let src = ImageFolder::open("/tmp/imagenette-224/train").unwrap();
    let files: Vec<Vec<u8>> = (0..src.len()).map(|i| match src.read(i).unwrap() { RawSample::Encoded(b) => b, _ => unreachable!() }).collect();
    let t = Transform::imagenet_train(Some(PcaNoise { eigenvalues: vec![0.2, 0.02, 0.005], eigenvectors: vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]], sigma: 0.1 }));
    let mut scratch = Scratch::new();
    let mut out = vec![0.0f32; t.sample_len()];
    for _ in 0..3 {
    let s = std::time::Instant::now();
    for i in 0..files.len() { t.apply(RawSample::Encoded(files[i].clone()), &mut sample_rng(0,0,i as u64), &mut scratch, &mut out).unwrap(); }
    println!("{:.0}/s", files.len() as f64 / s.elapsed().as_secs_f64());
    }
}
