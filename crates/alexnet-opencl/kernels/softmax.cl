// Fused, numerically stable softmax cross-entropy: one work-group (RED_WG) per row writes the
// probabilities and the row's (loss, label rank, label invalid); one work-group then reduces
// those to the mean loss and the batch summary [mean loss, top-1, top-5, invalid labels, first
// invalid row, its label] that the host reads in one transfer. Labels are class indices stored
// as float; the device cannot return an error, so an invalid one is counted in the summary
// (whose decoding is the error) and makes the loss NaN.

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
                                   __global float* probs, __global float* row_stats) {
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
    const float label = labels[row];
    const int li = (int)label;
    const bool valid = label >= 0.0f && label < (float)classes && (float)li == label;
    // The label's rank: classes scoring higher, ties counting for lower indices only.
    const float target = valid ? z[li] : 0.0f;
    float beaten = 0.0f;
    for (uint j = get_local_id(0); j < classes; j += RED_WG) {
        beaten += (z[j] > target || (z[j] == target && (int)j < li)) ? 1.0f : 0.0f;
    }
    beaten = group_sum(scratch, beaten);
    if (get_local_id(0) == 0) {
        row_stats[3 * row] = valid ? log(s) - (z[li] - m) : 0.0f;
        row_stats[3 * row + 1] = valid ? beaten : (float)classes;
        row_stats[3 * row + 2] = valid ? 0.0f : 1.0f;
    }
}

// One work-group: loss[0] = mean row loss (NaN with any invalid label) and the summary.
__kernel void softmax_xent_summary(const uint batch, __global const float* row_stats, __global const float* labels,
                                   __global float* loss, __global float* summary) {
    __local float scratch[RED_WG];
    float total = 0.0f, top1 = 0.0f, top5 = 0.0f, invalid = 0.0f, first = -INFINITY;
    for (uint r = get_local_id(0); r < batch; r += RED_WG) {
        total += row_stats[3 * r];
        const float rank = row_stats[3 * r + 1];
        top1 += rank < 1.0f ? 1.0f : 0.0f;
        top5 += rank < 5.0f ? 1.0f : 0.0f;
        const bool bad = row_stats[3 * r + 2] != 0.0f;
        invalid += bad ? 1.0f : 0.0f;
        if (bad) first = fmax(first, -(float)r);  // the lowest invalid row, negated
    }
    total = group_sum(scratch, total);
    top1 = group_sum(scratch, top1);
    top5 = group_sum(scratch, top5);
    invalid = group_sum(scratch, invalid);
    first = group_max(scratch, first);
    if (get_local_id(0) == 0) {
        const float mean = invalid > 0.0f ? NAN : total / (float)batch;
        const uint first_row = invalid > 0.0f ? (uint)(-first) : 0;
        loss[0] = mean;
        summary[0] = mean;
        summary[1] = top1;
        summary[2] = top5;
        summary[3] = invalid;
        summary[4] = (float)first_row;
        summary[5] = invalid > 0.0f ? labels[first_row] : 0.0f;
    }
}

// dlogits = dloss[0] / batch * (probs - onehot): the upstream gradient stays on the device.
__kernel void softmax_xent_backward(const uint n, const uint classes, const float inv_batch,
                                    __global const float* dloss, __global const float* probs,
                                    __global const float* labels, __global float* dlogits) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const float scale = dloss[0] * inv_batch;
    const uint row = i / classes;
    const float onehot = (float)(i - row * classes) == labels[row] ? 1.0f : 0.0f;
    dlogits[i] = scale * (probs[i] - onehot);
}
