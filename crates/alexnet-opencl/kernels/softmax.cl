// Fused, numerically stable softmax cross-entropy: one work-group (RED_WG) per row.
// Labels are class indices stored as float; an invalid label yields a NaN row loss (the
// device cannot return an error), which the host-side loss read-back exposes.

float group_max(__local float* scratch, const float value) {
    const uint lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED_WG / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

__kernel void softmax_xent_forward(const uint classes, __global const float* logits, __global const float* labels,
                                   __global float* probs, __global float* row_loss) {
    __local float scratch[RED_WG];
    const uint row = get_group_id(0);
    __global const float* z = logits + row * classes;
    __global float* p = probs + row * classes;
    float m = -INFINITY;
    for (uint j = get_local_id(0); j < classes; j += RED_WG) m = fmax(m, z[j]);
    m = group_max(scratch, m);
    float s = 0.0f;
    for (uint j = get_local_id(0); j < classes; j += RED_WG) s += exp(z[j] - m);
    s = group_sum(scratch, s);
    const float inv = 1.0f / s;
    for (uint j = get_local_id(0); j < classes; j += RED_WG) p[j] = exp(z[j] - m) * inv;
    if (get_local_id(0) == 0) {
        const float label = labels[row];
        const int li = (int)label;
        const bool valid = label >= 0.0f && label < (float)classes && (float)li == label;
        row_loss[row] = valid ? log(s) - (z[li] - m) : NAN;
    }
}

__kernel void softmax_xent_backward(const uint n, const uint classes, const float scale, __global const float* probs,
                                    __global const float* labels, __global float* dlogits) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const uint row = i / classes;
    const float onehot = (float)(i - row * classes) == labels[row] ? 1.0f : 0.0f;
    dlogits[i] = scale * (probs[i] - onehot);
}
