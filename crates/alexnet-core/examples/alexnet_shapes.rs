//! Prints the shapes of the paper's five convolutional stages, computed by alexnet-core's
//! geometry, and shows the error for the paper's nominal 224 input.

use alexnet_core::{Conv2dGeom, LrnParams, PoolGeom, Rounding, Shape4};

fn main() -> Result<(), alexnet_core::Error> {
    let pool = PoolGeom::square(3, 2, 0, Rounding::Exact)?;
    let exact = |g: Conv2dGeom| g.with_rounding(Rounding::Exact);
    let convs = [
        ("conv1", exact(Conv2dGeom::square(3, 96, 11, 4, 0, 1)?), true),
        ("conv2", exact(Conv2dGeom::square(96, 256, 5, 1, 2, 2)?), true),
        ("conv3", exact(Conv2dGeom::square(256, 384, 3, 1, 1, 1)?), false),
        ("conv4", exact(Conv2dGeom::square(384, 384, 3, 1, 1, 2)?), false),
        ("conv5", exact(Conv2dGeom::square(384, 256, 3, 1, 1, 2)?), true),
    ];
    let mut shape = Shape4::new(1, 3, 227, 227)?;
    println!("input {shape}; LRN {:?}", LrnParams::paper());
    for (name, geom, pooled) in convs {
        let conv_out = geom.output_shape(shape)?;
        shape = if pooled { pool.output_shape(conv_out)? } else { conv_out };
        println!("{name}: {conv_out} -> {shape}  ({} parameters)", geom.param_count(true));
    }
    let err = convs[0].1.output_shape(Shape4::new(1, 3, 224, 224)?).unwrap_err();
    println!("224 input: {err}");
    Ok(())
}
