// Local response normalisation across channels (the window clips at the first and last
// channel). alpha_c is the coefficient of the plain sum of squares: alpha (paper) or
// alpha / n (Caffe/PyTorch), chosen on the host. scale^-beta is exp(-beta * log(scale)):
// scale >= k > 0, and PoCL's pow() made the forward ~6x slower (measured on AlexNet's first LRN).

float pow_neg(const float scale, const float beta) {
    return exp(-beta * log(scale));
}

__kernel void lrn_forward(const uint total, const uint C, const uint HW, const uint half_window, const float k,
                          const float alpha_c, const float beta, __global const float* x, __global float* y,
                          __global float* scale) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint s = i % HW;
    const uint c = (i / HW) % C;
    __global const float* column = x + (i / (HW * C)) * C * HW + s;
    const uint lo = c >= half_window ? c - half_window : 0;
    const uint hi = min(c + half_window, C - 1);
    float sum = 0.0f;
    for (uint j = lo; j <= hi; j++) {
        const float v = column[j * HW];
        sum = fma(v, v, sum);
    }
    const float sc = k + alpha_c * sum;
    scale[i] = sc;
    y[i] = x[i] * pow_neg(sc, beta);
}

// dx_i = dy_i * scale_i^-beta - 2 alpha_c beta x_i * sum over j with i in window(j) of dy_j y_j / scale_j;
// the window relation is symmetric, so j runs over window(i).
__kernel void lrn_backward(const uint total, const uint C, const uint HW, const uint half_window, const float alpha_c,
                           const float beta, __global const float* x, __global const float* y,
                           __global const float* scale, __global const float* dy, __global float* dx) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint s = i % HW;
    const uint c = (i / HW) % C;
    const uint base = (i / (HW * C)) * C * HW + s;
    const uint lo = c >= half_window ? c - half_window : 0;
    const uint hi = min(c + half_window, C - 1);
    float acc = 0.0f;
    for (uint j = lo; j <= hi; j++) {
        const uint at = base + j * HW;
        acc += dy[at] * y[at] / scale[at];
    }
    dx[i] = dy[i] * pow_neg(scale[i], beta) - 2.0f * alpha_c * beta * x[i] * acc;
}
