// Convolution as GEMM over a chunk of `nb` images at once. The column matrix is
// col[row][img][p] with row = (c * KH + ky) * KW + kx over all C input channels and
// p = oy * OW + ox: one matrix of C * KH * KW rows and nb * OH * OW columns, the images side by
// side, so that one GEMM per group covers the whole chunk (group g's rows are g * K .. (g + 1) * K,
// channels being split contiguously). Output-shaped data travel in the matching layout
// [channel][img][p], converted from and to NCHW by `swap_outer`.

__kernel void im2col(const uint total, __global const float* x, const uint x_off, const uint nb, const uint C,
                     const uint H, const uint W, const uint KH, const uint KW, const uint SH, const uint SW,
                     const uint PH, const uint PW, const uint OH, const uint OW, __global float* col) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint P = OH * OW;
    const uint p = i % P;
    const uint img = (i / P) % nb;
    const uint row = i / (P * nb);
    const uint kx = row % KW;
    const uint ky = (row / KW) % KH;
    const uint c = row / (KH * KW);
    const int iy = (int)((p / OW) * SH + ky) - (int)PH;
    const int ix = (int)((p % OW) * SW + kx) - (int)PW;
    const bool inside = iy >= 0 && iy < (int)H && ix >= 0 && ix < (int)W;
    col[i] = inside ? x[x_off + ((img * C + c) * H + iy) * W + ix] : 0.0f;
}

// The adjoint of im2col as a gather: each input cell sums the column entries that read it
// (no atomics). Overwrites dx[dx_off ..] for the chunk's nb images.
__kernel void col2im(const uint total, __global const float* col, const uint nb, const uint C, const uint H,
                     const uint W, const uint KH, const uint KW, const uint SH, const uint SW, const uint PH,
                     const uint PW, const uint OH, const uint OW, __global float* dx, const uint dx_off) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint P = OH * OW;
    const uint row_len = nb * P;
    const int ix = i % W;
    const int iy = (i / W) % H;
    const uint c = (i / (W * H)) % C;
    const uint img = i / (W * H * C);
    __global const float* base = col + (c * KH * KW) * row_len + img * P;
    float acc = 0.0f;
    for (uint ky = 0; ky < KH; ky++) {
        const int ty = iy + (int)PH - (int)ky;
        if (ty < 0 || ty % (int)SH != 0) continue;
        const uint oy = ty / SH;
        if (oy >= OH) continue;
        for (uint kx = 0; kx < KW; kx++) {
            const int tx = ix + (int)PW - (int)kx;
            if (tx < 0 || tx % (int)SW != 0) continue;
            const uint ox = tx / SW;
            if (ox >= OW) continue;
            acc += base[(ky * KW + kx) * row_len + oy * OW + ox];
        }
    }
    dx[dx_off + i] = acc;
}

// dst[b][a][p] = src[a][b][p] for src viewed as [A][B][P]: NCHW <-> [channel][img][p].
__kernel void swap_outer(const uint total, __global const float* src, const uint src_off, const uint A,
                         const uint B, const uint P, __global float* dst, const uint dst_off) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint p = i % P;
    const uint a = (i / P) % A;
    const uint b = i / (P * A);
    dst[dst_off + i] = src[src_off + (a * B + b) * P + p];
}
