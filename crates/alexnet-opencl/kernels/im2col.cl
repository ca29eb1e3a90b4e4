// im2col / col2im for convolution as GEMM. For `nb` images starting at element x_off of x,
// col[img][row][p] with row = (c * KH + ky) * KW + kx over all C input channels and
// p = oy * OW + ox. Groups split channels contiguously, so group g's K x P block is rows
// g * K .. (g + 1) * K of each image: no separate layout per group.

__kernel void im2col(const uint total, __global const float* x, const uint x_off, const uint C, const uint H,
                     const uint W, const uint KH, const uint KW, const uint SH, const uint SW, const uint PH,
                     const uint PW, const uint OH, const uint OW, __global float* col) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint P = OH * OW;
    const uint rows = C * KH * KW;
    const uint p = i % P;
    const uint t = i / P;
    const uint row = t % rows;
    const uint img = t / rows;
    const uint kx = row % KW;
    const uint ky = (row / KW) % KH;
    const uint c = row / (KH * KW);
    const int iy = (int)((p / OW) * SH + ky) - (int)PH;
    const int ix = (int)((p % OW) * SW + kx) - (int)PW;
    const bool inside = iy >= 0 && iy < (int)H && ix >= 0 && ix < (int)W;
    col[i] = inside ? x[x_off + ((img * C + c) * H + iy) * W + ix] : 0.0f;
}

// The adjoint of im2col as a gather: each input cell sums the column entries that read it
// (no atomics). Overwrites dx[dx_off ..].
__kernel void col2im(const uint total, __global const float* col, const uint C, const uint H, const uint W,
                     const uint KH, const uint KW, const uint SH, const uint SW, const uint PH, const uint PW,
                     const uint OH, const uint OW, __global float* dx, const uint dx_off) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint P = OH * OW;
    const int ix = i % W;
    const int iy = (i / W) % H;
    const uint c = (i / (W * H)) % C;
    const uint img = i / (W * H * C);
    __global const float* base = col + (img * C + c) * KH * KW * P;
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
            acc += base[(ky * KW + kx) * P + oy * OW + ox];
        }
    }
    dx[dx_off + i] = acc;
}
