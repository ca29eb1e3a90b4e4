// The paper's SGD update: v <- momentum * v - weight_decay * lr * w - lr * grad; w <- w + v.
__kernel void sgd_step(const uint n, const float lr, const float momentum, const float weight_decay,
                       __global float* w, __global const float* grad, __global float* velocity) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    const float wi = w[i];
    const float v = momentum * velocity[i] - weight_decay * lr * wi - lr * grad[i];
    velocity[i] = v;
    w[i] = wi + v;
}
