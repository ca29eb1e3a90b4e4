// Max and average pooling over each channel plane. Windows start at o * S - P and clip at
// the input edge (ceil mode may hang a window over the right edge); average pooling divides
// by the number of in-input cells. Backward kernels are gathers over the windows covering
// each input cell, so no atomics are needed; they overwrite dx.

#define POOL_PARAMS const uint H, const uint W, const uint OH, const uint OW, const uint KH, const uint KW, \
                    const uint SH, const uint SW, const uint PH, const uint PW

// The clipped window [*h0, *h1) x [*w0, *w1) of output (oy, ox).
void pool_window(const uint oy, const uint ox, POOL_PARAMS, int* h0, int* h1, int* w0, int* w1) {
    const int hs = (int)(oy * SH) - (int)PH;
    const int ws = (int)(ox * SW) - (int)PW;
    *h0 = max(hs, 0);
    *h1 = min(hs + (int)KH, (int)H);
    *w0 = max(ws, 0);
    *w1 = min(ws + (int)KW, (int)W);
}

// Flat in-plane index of the first maximum (row-major window order; a NaN wins, as on the
// CPU); -1 for an empty window.
int window_argmax(__global const float* plane, const uint oy, const uint ox, POOL_PARAMS) {
    int h0, h1, w0, w1;
    pool_window(oy, ox, H, W, OH, OW, KH, KW, SH, SW, PH, PW, &h0, &h1, &w0, &w1);
    int best = -1;
    float best_v = 0.0f;
    for (int h = h0; h < h1; h++) {
        for (int w = w0; w < w1; w++) {
            const float v = plane[h * (int)W + w];
            if (best < 0 || v > best_v || (isnan(v) && !isnan(best_v))) { best = h * (int)W + w; best_v = v; }
        }
    }
    return best;
}

// The range of outputs [*lo, *hi] along one axis whose windows cover input cell i.
void covering(const int i, const uint K, const uint S, const uint P, const uint O, int* lo, int* hi) {
    const int t = i + (int)P - (int)K;
    *lo = t < 0 ? 0 : t / (int)S + 1;
    *hi = min((i + (int)P) / (int)S, (int)O - 1);
}

__kernel void max_pool_forward(const uint total, __global const float* x, __global float* y, POOL_PARAMS) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ox = i % OW;
    const uint oy = (i / OW) % OH;
    __global const float* plane = x + (i / (OW * OH)) * H * W;
    const int best = window_argmax(plane, oy, ox, H, W, OH, OW, KH, KW, SH, SW, PH, PW);
    y[i] = best < 0 ? 0.0f : plane[best];
}

__kernel void max_pool_backward(const uint total, __global const float* x, __global const float* dy,
                                __global float* dx, POOL_PARAMS) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const int iw = i % W;
    const int ih = (i / W) % H;
    const uint plane_index = i / (W * H);
    __global const float* plane = x + plane_index * H * W;
    __global const float* dplane = dy + plane_index * OH * OW;
    int oy0, oy1, ox0, ox1;
    covering(ih, KH, SH, PH, OH, &oy0, &oy1);
    covering(iw, KW, SW, PW, OW, &ox0, &ox1);
    float acc = 0.0f;
    for (int oy = oy0; oy <= oy1; oy++) {
        for (int ox = ox0; ox <= ox1; ox++) {
            if (window_argmax(plane, oy, ox, H, W, OH, OW, KH, KW, SH, SW, PH, PW) == ih * (int)W + iw) {
                acc += dplane[oy * OW + ox];
            }
        }
    }
    dx[i] = acc;
}

__kernel void avg_pool_forward(const uint total, __global const float* x, __global float* y, POOL_PARAMS) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ox = i % OW;
    const uint oy = (i / OW) % OH;
    __global const float* plane = x + (i / (OW * OH)) * H * W;
    int h0, h1, w0, w1;
    pool_window(oy, ox, H, W, OH, OW, KH, KW, SH, SW, PH, PW, &h0, &h1, &w0, &w1);
    float acc = 0.0f;
    for (int h = h0; h < h1; h++) {
        for (int w = w0; w < w1; w++) acc += plane[h * (int)W + w];
    }
    const int count = max(h1 - h0, 0) * max(w1 - w0, 0);
    y[i] = count > 0 ? acc / (float)count : 0.0f;
}

__kernel void avg_pool_backward(const uint total, __global const float* dy, __global float* dx, POOL_PARAMS) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const int iw = i % W;
    const int ih = (i / W) % H;
    __global const float* dplane = dy + (i / (W * H)) * OH * OW;
    int oy0, oy1, ox0, ox1;
    covering(ih, KH, SH, PH, OH, &oy0, &oy1);
    covering(iw, KW, SW, PW, OW, &ox0, &ox1);
    float acc = 0.0f;
    for (int oy = oy0; oy <= oy1; oy++) {
        for (int ox = ox0; ox <= ox1; ox++) {
            int h0, h1, w0, w1;
            pool_window(oy, ox, H, W, OH, OW, KH, KW, SH, SW, PH, PW, &h0, &h1, &w0, &w1);
            acc += dplane[oy * OW + ox] / (float)((h1 - h0) * (w1 - w0));
        }
    }
    dx[i] = acc;
}
