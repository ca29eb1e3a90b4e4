// Element-wise ops, activations, per-channel bias and reductions.
// Sizes are uint; every kernel bounds-checks because global sizes are rounded up.
// RED_WG (a power of two) is the work-group size of the reduction kernels.

__kernel void fill(__global float* out, const uint n, const float value) {
    const uint i = get_global_id(0);
    if (i < n) out[i] = value;
}

__kernel void axpy(const uint n, const float alpha, __global const float* x, __global float* y) {
    const uint i = get_global_id(0);
    if (i < n) y[i] = fma(alpha, x[i], y[i]);
}

__kernel void add_scaled(const uint n, const float alpha, __global const float* a, const float beta,
                         __global const float* b, __global float* out) {
    const uint i = get_global_id(0);
    if (i < n) out[i] = alpha * a[i] + beta * b[i];
}

__kernel void scale(const uint n, const float alpha, __global const float* x, __global float* out) {
    const uint i = get_global_id(0);
    if (i < n) out[i] = alpha * x[i];
}

__kernel void mul(const uint n, __global const float* a, __global const float* b, __global float* out) {
    const uint i = get_global_id(0);
    if (i < n) out[i] = a[i] * b[i];
}

// kind: 0 ReLU, 1 sigmoid, 2 tanh.
__kernel void activation_forward(const uint n, const uint kind, __global const float* x, __global float* y) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const float v = x[i];
    y[i] = kind == 0 ? fmax(v, 0.0f) : kind == 1 ? 1.0f / (1.0f + exp(-v)) : tanh(v);
}

__kernel void activation_backward(const uint n, const uint kind, __global const float* x, __global const float* y,
                                  __global const float* dy, __global float* dx) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const float g = dy[i];
    const float o = y[i];
    dx[i] = kind == 0 ? (x[i] > 0.0f ? g : 0.0f) : kind == 1 ? g * o * (1.0f - o) : g * (1.0f - o * o);
}

// y[o, c, i] += bias[c] over an (outer, channels, inner) layout of n elements.
__kernel void add_channel_bias(const uint n, const uint channels, const uint inner, __global const float* bias,
                               __global float* y) {
    const uint i = get_global_id(0);
    if (i < n) y[i] += bias[(i / inner) % channels];
}

// Tree-sums `scratch` (RED_WG values in local memory) and returns the total to every work-item.
float group_sum(__local float* scratch, const float value) {
    const uint lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED_WG / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

// One work-group per channel: dbias[c] = sum over (o, i) of dy[o, c, i].
__kernel void channel_bias_grad(const uint outer, const uint channels, const uint inner, __global const float* dy,
                                __global float* dbias) {
    __local float scratch[RED_WG];
    const uint c = get_group_id(0);
    const uint count = outer * inner;
    float acc = 0.0f;
    for (uint j = get_local_id(0); j < count; j += RED_WG) {
        const uint o = j / inner;
        acc += dy[(o * channels + c) * inner + (j - o * inner)];
    }
    const float total = group_sum(scratch, acc);
    if (get_local_id(0) == 0) dbias[c] = total;
}

// Each work-group sums a strided share of x[0..n) into partial[group].
__kernel void reduce_sum(const uint n, __global const float* x, __global float* partial) {
    __local float scratch[RED_WG];
    float acc = 0.0f;
    for (uint i = get_global_id(0); i < n; i += get_global_size(0)) acc += x[i];
    const float total = group_sum(scratch, acc);
    if (get_local_id(0) == 0) partial[get_group_id(0)] = total;
}
