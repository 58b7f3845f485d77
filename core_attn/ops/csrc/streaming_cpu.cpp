// Sink + sliding-window causal attention for CPU (float32), one fused pass.
//
// Semantics are those of core_attn.ops.reference without a padding mask: query row i sits
// at position p = Tk - Tq + i and attends key j iff j <= p and (j < sink or p - j < window).
//
// Work item = (batch, kv_head, block of BM query rows). The rows of every streaming q_head
// of that kv_head are packed into one [M = G * BM, D] matrix, so one GEMM serves the whole
// GQA group and K/V are read once per item, never repeated. An item visits only the keys
// some of its rows can see: the sinks [0, min(sink, p1 + 1)) and the band
// [max(.., p0 - window + 1), p1]; its cost grows as Tq * (sink + window + BM), not Tq * Tk.
// In a key block each row sees one interval; only scores outside it are set to -inf (a fill,
// no mask tensor), so blocks that every row sees fully are never touched. Softmax is the
// online (flash) form, so nothing of size Tq * Tk is ever stored. Work items are handed out
// dynamically over OpenMP threads.
//
// GEMMs go to the BLAS that PyTorch itself links (Fortran sgemm_), in the same layout as
// PyTorch's own CPU flash-attention kernel; exp is ATen's vectorised exp_u20.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

namespace {

using Vec = at::vec::Vectorized<float>;

// Row-major C[m, n] (ld ldc) = alpha * A[m, k] . B[n, k]^T + beta * C   (A ld lda, B ld ldb)
inline void gemm_abt(int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb, float beta,
                     float* c, int ldc) {
  // Column-major view: C^T[n, m] = B[n, k] . A^T  ->  sgemm('T', 'N', n, m, k, B, A).
  const char t = 'T', nt = 'N';
  sgemm_(&t, &nt, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

// Row-major C[m, n] (ld ldc) = A[m, k] . B[k, n] + beta * C   (A ld lda, B ld ldb)
inline void gemm_ab(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta, float* c,
                    int ldc) {
  // Column-major view: C^T[n, m] = B^T[n, k] . A^T[k, m]  ->  sgemm('N', 'N', n, m, k, B, A).
  const char nt = 'N';
  const float one = 1.f;
  sgemm_(&nt, &nt, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// In place: x[j] = exp(x[j] - shift); returns the sum. exp(-inf) = 0 keeps masked keys out.
inline float exp_sum(float* x, int n, float shift) {
  const Vec vshift(shift);
  Vec vsum(0.f);
  int j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec e = (Vec::loadu(x + j) - vshift).exp_u20();
    e.store(x + j);
    vsum = vsum + e;
  }
  float sum = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, vsum);
  for (; j < n; ++j) {
    x[j] = std::exp(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

inline float row_max(const float* x, int n) {
  Vec vmax(kNegInf);
  int j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) vmax = at::vec::maximum(vmax, Vec::loadu(x + j));
  float mx = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, vmax);
  for (; j < n; ++j) mx = std::max(mx, x[j]);
  return mx;
}

inline void scale_row(float* x, int n, float s) {
  const Vec vs(s);
  int j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) (Vec::loadu(x + j) * vs).store(x + j);
  for (; j < n; ++j) x[j] *= s;
}

}  // namespace

// query [B, HQ, Tq, D], key/value [B, HKV, Tk, D] (float32, last dim contiguous, any other strides);
// out [B, HQ, Tq, D] float32, written for q_heads listed in `heads` only (rows [0, Tq)).
// heads: int64 [n], the streaming q_heads, each kv_head's ones contiguous and in order.
void streaming_attention_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                             at::Tensor& out, const at::Tensor& heads, int64_t sink_size, int64_t window_size,
                             double scale, int64_t block_m, int64_t block_n) {
  TORCH_CHECK(query.scalar_type() == at::kFloat && key.scalar_type() == at::kFloat &&
                  value.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat,
              "streaming_attention_cpu: float32 tensors only");
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.dim() == 4 && out.dim() == 4, "4-d tensors expected");
  TORCH_CHECK(query.stride(3) == 1 && key.stride(3) == 1 && value.stride(3) == 1 && out.stride(3) == 1,
              "last dim must be contiguous");
  TORCH_CHECK(heads.scalar_type() == at::kLong && heads.dim() == 1, "heads: int64 [n]");
  TORCH_CHECK(block_m >= 1 && block_n >= 1, "block sizes must be positive");
  const int64_t B = query.size(0), HQ = query.size(1), Tq = query.size(2), D = query.size(3);
  const int64_t HKV = key.size(1), Tk = key.size(2);
  TORCH_CHECK(HQ % HKV == 0 && Tq <= Tk, "bad shapes");
  const int64_t group = HQ / HKV, offset = Tk - Tq;
  const at::Tensor heads_c = heads.contiguous();
  const int64_t* hp = heads_c.data_ptr<int64_t>();
  const int64_t n_heads = heads_c.numel();

  // Streaming q_heads of each kv_head (a span of `hp`).
  std::vector<int64_t> kv_of, first, count;
  for (int64_t i = 0; i < n_heads;) {
    const int64_t g = hp[i] / group;
    int64_t j = i;
    while (j < n_heads && hp[j] / group == g) ++j;
    kv_of.push_back(g);
    first.push_back(i);
    count.push_back(j - i);
    i = j;
  }
  const int64_t n_groups = static_cast<int64_t>(kv_of.size());
  if (n_groups == 0 || Tq == 0) return;
  const int64_t n_qblocks = (Tq + block_m - 1) / block_m;
  int64_t max_g = 0;
  for (auto c : count) max_g = std::max(max_g, c);

  const float* q = query.data_ptr<float>();
  const float* k = key.data_ptr<float>();
  const float* v = value.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t qsB = query.stride(0), qsH = query.stride(1), qsT = query.stride(2);
  const int64_t ksB = key.stride(0), ksH = key.stride(1), ksT = key.stride(2);
  const int64_t vsB = value.stride(0), vsH = value.stride(1), vsT = value.stride(2);
  const int64_t osB = out.stride(0), osH = out.stride(1), osT = out.stride(2);
  const float sc = static_cast<float>(scale);
  const int64_t S = sink_size, W = window_size;

  const int64_t n_items = B * n_groups * n_qblocks;
  // Items differ in cost (the first rows see fewer keys, groups differ in size), so they are
  // handed out dynamically rather than split statically as at::parallel_for would.
  const int n_threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), n_items));
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !at::in_parallel_region())
  {
    const int64_t max_m = max_g * block_m;
    std::vector<float> qpack(max_m * D), acc(max_m * D), scores(max_m * block_n);
    std::vector<float> row_m(max_m), row_l(max_m);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t qb = item / (B * n_groups);
      const int64_t bg = item % (B * n_groups);
      const int64_t gi = bg % n_groups, b = bg / n_groups;
      const int64_t g = kv_of[gi], h0 = first[gi], gs = count[gi];
      const int64_t m0 = qb * block_m, bm = std::min(block_m, Tq - m0);
      const int64_t M = gs * bm;
      const int64_t p0 = offset + m0, p1 = offset + m0 + bm - 1;

      // Pack the group's rows: qpack[(hi * bm + i), :] = q[b, heads[h0 + hi], m0 + i, :].
      for (int64_t hi = 0; hi < gs; ++hi) {
        const float* src = q + b * qsB + hp[h0 + hi] * qsH + m0 * qsT;
        for (int64_t i = 0; i < bm; ++i) std::copy(src + i * qsT, src + i * qsT + D, qpack.data() + (hi * bm + i) * D);
      }
      std::fill(row_m.begin(), row_m.begin() + M, kNegInf);
      std::fill(row_l.begin(), row_l.begin() + M, 0.f);
      std::fill(acc.begin(), acc.begin() + M * D, 0.f);

      // Key ranges some row of the block sees: sinks, then the band.
      const int64_t a_end = std::min(S, p1 + 1);
      const int64_t b_lo = W > 0 ? std::max(a_end, p0 - W + 1) : p1 + 1;
      const int64_t ranges[2][2] = {{0, a_end}, {b_lo, p1 + 1}};
      const float* kb = k + b * ksB + g * ksH;
      const float* vb = v + b * vsB + g * vsH;
      for (const auto& range : ranges) {
        // Even blocks of at most block_n keys: no short tail block with a poorly shaped GEMM.
        const int64_t len = range[1] - range[0];
        const int64_t step = len > 0 ? (len + (len + block_n - 1) / block_n - 1) / ((len + block_n - 1) / block_n) : 1;
        for (int64_t n0 = range[0]; n0 < range[1]; n0 += step) {
          const int64_t bn = std::min(step, range[1] - n0), n1 = n0 + bn;
          float* s = scores.data();
          gemm_abt(M, bn, D, sc, qpack.data(), D, kb + n0 * ksT, ksT, 0.f, s, bn);
          // Row p sees one interval of the block: [n0, p] in the sink range, (p - W, p] in
          // the band (whose keys are all >= sink). Only keys outside it are masked.
          const bool sinks = n0 < a_end;
          for (int64_t r = 0; r < M; ++r) {
            float* sr = s + r * bn;
            const int64_t p = p0 + r % bm;
            const int64_t lo = sinks ? n0 : std::max(n0, p - W + 1), hi = std::min(n1, p + 1);
            if (hi <= lo) {
              std::fill(sr, sr + bn, kNegInf);
            } else {
              std::fill(sr, sr + (lo - n0), kNegInf);
              std::fill(sr + (hi - n0), sr + bn, kNegInf);
            }
            const float mx = std::max(row_m[r], row_max(sr, bn));
            if (mx == kNegInf) {  // nothing seen yet: contributes nothing
              std::fill(sr, sr + bn, 0.f);
              continue;
            }
            const float corr = row_m[r] == kNegInf ? 0.f : std::exp(row_m[r] - mx);
            row_l[r] = row_l[r] * corr + exp_sum(sr, bn, mx);
            row_m[r] = mx;
            if (corr != 1.f) scale_row(acc.data() + r * D, D, corr);
          }
          gemm_ab(M, D, bn, s, bn, vb + n0 * vsT, vsT, 1.f, acc.data(), D);
        }
      }
      for (int64_t hi = 0; hi < gs; ++hi) {
        float* dst = o + b * osB + hp[h0 + hi] * osH + m0 * osT;
        for (int64_t i = 0; i < bm; ++i) {
          const int64_t r = hi * bm + i;
          float* d = dst + i * osT;
          const float* a = acc.data() + r * D;
          if (row_l[r] > 0.f) {
            const float inv = 1.f / row_l[r];
            for (int64_t j = 0; j < D; ++j) d[j] = a[j] * inv;
          } else {
            std::fill(d, d + D, 0.f);  // a row that attends nothing (window 0 past the sinks)
          }
        }
      }
    }
  }
}

TORCH_LIBRARY(core_attn_cpu, m) {
  m.def(
      "streaming_attention(Tensor query, Tensor key, Tensor value, Tensor(a!) out, Tensor heads, int sink_size, "
      "int window_size, float scale, int block_m, int block_n) -> ()");
}

TORCH_LIBRARY_IMPL(core_attn_cpu, CPU, m) { m.impl("streaming_attention", &streaming_attention_cpu); }
