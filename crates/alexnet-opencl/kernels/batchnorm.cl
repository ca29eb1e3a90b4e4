// Batch normalisation over an (outer, C, inner) layout; statistics per channel over
// count = outer * inner elements. Reductions run one work-group (RED_WG) per channel and
// use group_sum from elementwise.cl.

uint bn_at(const uint j, const uint c, const uint C, const uint inner) {
    const uint o = j / inner;
    return (o * C + c) * inner + (j - o * inner);
}

// Batch mean and biased variance (two passes for accuracy); saves mean and 1/sqrt(var + eps);
// updates the running averages with the unbiased variance.
__kernel void bn_stats(const uint outer, const uint C, const uint inner, const float eps, const float momentum,
                       __global const float* x, __global float* running_mean, __global float* running_var,
                       __global float* saved_mean, __global float* saved_inv_std) {
    __local float scratch[RED_WG];
    const uint c = get_group_id(0);
    const uint count = outer * inner;
    float acc = 0.0f;
    for (uint j = get_local_id(0); j < count; j += RED_WG) acc += x[bn_at(j, c, C, inner)];
    const float mean = group_sum(scratch, acc) / (float)count;
    acc = 0.0f;
    for (uint j = get_local_id(0); j < count; j += RED_WG) {
        const float d = x[bn_at(j, c, C, inner)] - mean;
        acc = fma(d, d, acc);
    }
    const float var = group_sum(scratch, acc) / (float)count;
    if (get_local_id(0) == 0) {
        saved_mean[c] = mean;
        saved_inv_std[c] = 1.0f / sqrt(var + eps);
        const float unbiased = count > 1 ? var * (float)count / (float)(count - 1) : var;
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    }
}

__kernel void bn_normalize(const uint n, const uint C, const uint inner, __global const float* x,
                           __global const float* mean, __global const float* inv_std, __global const float* gamma,
                           __global const float* beta, __global float* y) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const uint c = (i / inner) % C;
    y[i] = (x[i] - mean[c]) * inv_std[c] * gamma[c] + beta[c];
}

__kernel void bn_eval(const uint n, const uint C, const uint inner, const float eps, __global const float* x,
                      __global const float* gamma, __global const float* beta, __global const float* running_mean,
                      __global const float* running_var, __global float* y) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const uint c = (i / inner) % C;
    y[i] = (x[i] - running_mean[c]) / sqrt(running_var[c] + eps) * gamma[c] + beta[c];
}

// dbeta[c] = sum dy, dgamma[c] = sum dy * xhat.
__kernel void bn_grad_reduce(const uint outer, const uint C, const uint inner, __global const float* x,
                             __global const float* mean, __global const float* inv_std, __global const float* dy,
                             __global float* dgamma, __global float* dbeta) {
    __local float scratch[RED_WG];
    const uint c = get_group_id(0);
    const uint count = outer * inner;
    const float m = mean[c];
    const float inv = inv_std[c];
    float sum_dy = 0.0f, sum_dy_xhat = 0.0f;
    for (uint j = get_local_id(0); j < count; j += RED_WG) {
        const uint at = bn_at(j, c, C, inner);
        sum_dy += dy[at];
        sum_dy_xhat = fma(dy[at], (x[at] - m) * inv, sum_dy_xhat);
    }
    const float db = group_sum(scratch, sum_dy);
    const float dg = group_sum(scratch, sum_dy_xhat);
    if (get_local_id(0) == 0) {
        dbeta[c] = db;
        dgamma[c] = dg;
    }
}

// dx = gamma * inv_std / count * (count * dy - dbeta - xhat * dgamma).
__kernel void bn_backward_dx(const uint n, const uint C, const uint inner, const float count,
                             __global const float* x, __global const float* gamma, __global const float* mean,
                             __global const float* inv_std, __global const float* dy, __global const float* dgamma,
                             __global const float* dbeta, __global float* dx) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const uint c = (i / inner) % C;
    const float xhat = (x[i] - mean[c]) * inv_std[c];
    dx[i] = gamma[c] * inv_std[c] / count * (count * dy[i] - dbeta[c] - xhat * dgamma[c]);
}
