// Inverted dropout with alexnet_core::rng's counter-based generator, bit for bit:
// SplitMix64's finaliser of seed + (index + 1) * golden, top 24 bits as a uniform in [0, 1).
ulong mix64(const ulong seed, const ulong index) {
    ulong z = seed + (index + 1UL) * 0x9E3779B97F4A7C15UL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    return z ^ (z >> 31);
}

// keep_scale = 1 / (1 - p), computed once on the host in f32 like the CPU backend.
// Element i of a buffer of rows of row_len sits at row first_row + i / row_len, column
// first_col + i % row_len of the whole batch's tensor (alexnet_core::rng::MaskWindow).
__kernel void dropout_forward(const uint n, const float p, const float keep_scale, const ulong seed,
                              const ulong first_row, const ulong first_col, const ulong row_len,
                              const ulong total_row_len,
                              __global const float* x, __global float* mask, __global float* y) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const ulong global_index = (first_row + (ulong)i / row_len) * total_row_len + first_col + (ulong)i % row_len;
    const float u = (float)(mix64(seed, global_index) >> 40) * (1.0f / 16777216.0f);
    const float m = u >= p ? keep_scale : 0.0f;
    mask[i] = m;
    y[i] = x[i] * m;
}
