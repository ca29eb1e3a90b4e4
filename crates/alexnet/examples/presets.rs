//! Prints every preset's Keras-style summary and checks the paper's parameter count.
//!
//! `cargo run -p alexnet --example presets`

use alexnet::{Architecture, Preset};

fn main() -> Result<(), alexnet::Error> {
    for preset in Preset::ALL {
        let arch = Architecture::default_for(preset)?;
        println!("{}", arch.summary());
    }
    let paper = Architecture::default_for(Preset::Paper)?;
    assert_eq!(paper.trainable_params(), 60_965_224);
    // The paper's nominal 224 input does not close at conv1: the error names 227.
    match Architecture::new(Preset::Paper, [3, 224, 224], 1000) {
        Err(e) => println!("224x224: {e}"),
        Ok(_) => unreachable!("224 does not close"),
    }
    Ok(())
}
