// Batched C = alpha * op(A) * op(B) + beta * C, row-major, for any M, N, K.
//
// GPU design: a work-group of GEMM_RTS x GEMM_RTS threads computes a TSM x TSN tile of C
// (TSM = GEMM_RTS * GEMM_WPT rows, TSN = 4 * GEMM_RTS columns), staging TSM x GEMM_TSK and
// GEMM_TSK x TSN panels of A and B in local memory. Each thread keeps a GEMM_WPT x 4 register
// tile as float4 rows: rows ty + GEMM_RTS * i, columns 4 tx .. 4 tx + 3, read from local memory
// as one float4. The host picks GEMM_RTS, GEMM_WPT and GEMM_TSK per device (KernelConfig).
// Global loads are coalesced along the stored matrix's contiguous axis for each transpose
// variant; panels that cross the matrix edge are zero-filled, and stores are bounds-checked.
//
// Batch: work-item z = get_global_id(2) selects batch item z, and each matrix advances by its
// own stride (convolution batches over groups in one launch).

// Helpers are plain (not C99 `inline`) functions throughout: an inline-only definition has
// no external symbol when a compiler declines to inline it. gemm_tile asks to be inlined so
// that its transpose flags fold to constants in each kernel.

#define TSM (GEMM_RTS * GEMM_WPT)
#define TSN (GEMM_RTS * 4)
#define LOADS_A ((TSM * GEMM_TSK) / (GEMM_RTS * GEMM_RTS))
#define LOADS_B ((TSN * GEMM_TSK) / (GEMM_RTS * GEMM_RTS))

#define GEMM_PARAMS                                                                              \
    const uint M, const uint N, const uint K, const float alpha, const float beta,                \
    __global const float* A, const uint a_off, const uint lda, const uint a_stride,               \
    __global const float* B, const uint b_off, const uint ldb, const uint b_stride,               \
    __global float* C, const uint c_off, const uint ldc, const uint c_stride

#define GEMM_ARGS M, N, K, alpha, beta, A, a_off, lda, a_stride, B, b_off, ldb, b_stride, C, c_off, ldc, c_stride

__attribute__((always_inline)) void gemm_tile(const bool trans_a, const bool trans_b, __local float* As, __local float* Bs, GEMM_PARAMS) {
    const uint tx = get_local_id(0);
    const uint ty = get_local_id(1);
    const uint tid = ty * GEMM_RTS + tx;
    const uint n0 = get_group_id(0) * TSN;
    const uint m0 = get_group_id(1) * TSM;
    const uint z = get_global_id(2);
    A += a_off + z * a_stride;
    B += b_off + z * b_stride;
    C += c_off + z * c_stride;

    float4 acc[GEMM_WPT];
    for (uint i = 0; i < GEMM_WPT; i++) acc[i] = (float4)(0.0f);

    for (uint k0 = 0; k0 < K; k0 += GEMM_TSK) {
        for (uint l = 0; l < LOADS_A; l++) {
            const uint e = tid + l * GEMM_RTS * GEMM_RTS;
            // A panel: TSM rows (m) x GEMM_TSK columns (k), stored k-major in As.
            uint mm, kk;
            if (trans_a) { mm = e % TSM; kk = e / TSM; } else { kk = e % GEMM_TSK; mm = e / GEMM_TSK; }
            const uint m = m0 + mm, k = k0 + kk;
            As[kk * TSM + mm] = (m < M && k < K) ? (trans_a ? A[k * lda + m] : A[m * lda + k]) : 0.0f;
        }
        for (uint l = 0; l < LOADS_B; l++) {
            const uint e = tid + l * GEMM_RTS * GEMM_RTS;
            // B panel: GEMM_TSK rows (k) x TSN columns (n), stored k-major in Bs.
            uint nn, kk;
            if (trans_b) { kk = e % GEMM_TSK; nn = e / GEMM_TSK; } else { nn = e % TSN; kk = e / TSN; }
            const uint n = n0 + nn, k = k0 + kk;
            Bs[kk * TSN + nn] = (n < N && k < K) ? (trans_b ? B[n * ldb + k] : B[k * ldb + n]) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint kk = 0; kk < GEMM_TSK; kk++) {
            const float4 b = vload4(tx, Bs + kk * TSN);
            for (uint i = 0; i < GEMM_WPT; i++) {
                acc[i] = fma((float4)(As[kk * TSM + ty + GEMM_RTS * i]), b, acc[i]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (uint i = 0; i < GEMM_WPT; i++) {
        const uint m = m0 + ty + GEMM_RTS * i;
        if (m >= M) continue;
        float vals[4];
        vstore4(acc[i], 0, vals);
        for (uint j = 0; j < 4; j++) {
            const uint n = n0 + tx * 4 + j;
            if (n >= N) continue;
            // beta == 0 must not read C: it may hold garbage (NaN) from a pooled buffer.
            const float prior = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
            C[m * ldc + n] = alpha * vals[j] + prior;
        }
    }
}

#define GEMM_KERNEL(name, ta, tb)                                                           \
    __kernel __attribute__((reqd_work_group_size(GEMM_RTS, GEMM_RTS, 1))) void name(GEMM_PARAMS) { \
        __local float As[GEMM_TSK * TSM];                                                   \
        __local float Bs[GEMM_TSK * TSN];                                                   \
        gemm_tile(ta, tb, As, Bs, GEMM_ARGS);                                               \
    }

GEMM_KERNEL(gemm_nn, false, false)
GEMM_KERNEL(gemm_nt, false, true)
GEMM_KERNEL(gemm_tn, true, false)
GEMM_KERNEL(gemm_tt, true, true)
