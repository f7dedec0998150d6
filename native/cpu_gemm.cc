// CPU kernels for XLA through the plugin's PJRT FFI extension: f32 matmuls on OpenBLAS, few-row products, empty buffers.
// Written here because no library plugs into XLA CPU so. Measured on this project's 2-core machine: XLA CPU's own
// f32 dots ran Llama's [1024, 576] x [576, 1536]-sized products 10-25% slower than OpenBLAS's SGEMM and batched
// attention products 2-3x slower, and a decode step's [8, 576] x [576, N] products pack all of the weight for 8
// rows. src/backend/stablehlo/cpu_gemm.ts decides which dot_generals come here (the targets below); the handlers
// use XLA's typed FFI (xla/ffi/api/c_api.h), whose structs are declared here as the plugins lay them out.
#include <dlfcn.h>
#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "tessera_pjrt.h"

namespace tessera {

namespace {

// The PJRT FFI extension (xla/pjrt/c/pjrt_c_api_ffi_extension.h), which no wheel's header carries: the layouts
// of its register-handler call and of the extension struct. Both catalogued plugins read the call's fields at
// these offsets (their PJRT_FFI_Register_Handler, disassembled): no `api_version` (typed handlers only), unlike
// older headers, whose untyped registrations would misplace every later field.
struct FfiRegisterHandlerArgs {
  size_t struct_size;
  const char* target_name;
  size_t target_name_size;
  void* handler;
  const char* platform_name;
  size_t platform_name_size;
  int traits;
};
using FfiRegisterHandler = PJRT_Error* (*)(FfiRegisterHandlerArgs*);
struct FfiExtension {
  PJRT_Extension_Base base;
  void* type_id_register;
  void* user_data_add;
  FfiRegisterHandler register_handler;
};

// XLA's typed FFI call frame (xla/ffi/api/c_api.h, API 0.x): the parts a handler of buffers reads.
struct FfiExtensionBase {
  size_t struct_size;
  int type;  // 1: the metadata query XLA sends when a handler is registered
  FfiExtensionBase* next;
};
struct FfiApiVersion {
  size_t struct_size;
  void* extension_start;
  int major_version;
  int minor_version;
};
struct FfiMetadata {
  size_t struct_size;
  FfiApiVersion api_version;
  uint32_t traits;
};
struct FfiMetadataExtension {
  FfiExtensionBase base;
  FfiMetadata* metadata;
};
struct FfiErrorCreateArgs {
  size_t struct_size;
  void* extension_start;
  const char* message;
  int errc;  // 3: INVALID_ARGUMENT
};
using FfiTask = void (*)(void* data);
struct FfiThreadPoolScheduleArgs {
  size_t struct_size;
  void* extension_start;
  void* ctx;
  FfiTask task;
  void* data;
};
struct FfiThreadPoolNumThreadsArgs {
  size_t struct_size;
  void* extension_start;
  void* ctx;
  int64_t* num_threads;
};
using FfiFn = void* (*)(void*);
struct FfiApi {
  size_t struct_size;
  void* extension_start;
  FfiApiVersion api_version;
  const void* internal_api;
  void* (*error_create)(FfiErrorCreateArgs*);
  // Error_GetMessage, Error_Destroy, Handler_Register, Stream_Get, Type_Register, ExecutionContext_Get, State_Set,
  // State_Get, DeviceMemory_Allocate, DeviceMemory_Free: not used here.
  FfiFn unused[10];
  void* (*thread_pool_schedule)(FfiThreadPoolScheduleArgs*);
  void* (*thread_pool_num_threads)(FfiThreadPoolNumThreadsArgs*);
};
struct FfiBuffer {
  size_t struct_size;
  void* extension_start;
  int dtype;  // 11: F32
  void* data;
  int64_t rank;
  int64_t* dims;
};
struct FfiList {  // XLA_FFI_Args and XLA_FFI_Rets share this layout
  size_t struct_size;
  void* extension_start;
  int64_t size;
  int* types;  // 1: a buffer
  void** items;
};
struct FfiCallFrame {
  size_t struct_size;
  FfiExtensionBase* extension_start;
  const FfiApi* api;
  void* ctx;
  int stage;  // 3: EXECUTE
  FfiList args;
  FfiList rets;
};
constexpr int kFfiS32 = 4, kFfiF32 = 11, kFfiBuffer = 1, kFfiExecute = 3, kFfiMetadata = 1, kFfiInvalidArgument = 3;

// CBLAS's enums, as OpenBLAS's cblas.h numbers them.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
using Sgemm = void (*)(int order, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda,
                       const float* b, int ldb, float beta, float* c, int ldc);

Sgemm g_sgemm = nullptr;
int64_t g_cores = 1;  // CPUs this process may run on, read at registration

void* FfiError(const FfiCallFrame* frame, const std::string& message) {
  FfiErrorCreateArgs a{sizeof(FfiErrorCreateArgs), nullptr, message.c_str(), kFfiInvalidArgument};
  return frame->api->error_create(&a);
}

const FfiBuffer* BufferOf(const FfiList& list, int64_t i, int dtype, int64_t rank) {
  if (i >= list.size || list.types[i] != kFfiBuffer) return nullptr;
  auto* b = static_cast<const FfiBuffer*>(list.items[i]);
  return b->dtype == dtype && b->rank == rank ? b : nullptr;
}

// Item `index` (clamped, as dynamic_slice clamps) of a stack [L, ...] whose items hold `items` floats each.
const float* StackItem(const FfiBuffer* stack, const FfiBuffer* index, int64_t items) {
  int64_t i = *static_cast<const int32_t*>(index->data);
  const int64_t last = stack->dims[0] - 1;
  i = i < 0 ? 0 : i > last ? last : i;
  return static_cast<const float*>(stack->data) + i * items;
}

// Answers the metadata query XLA sends when a handler is registered (which FFI API version it was built for);
// returns false when `frame` is a real call.
bool AnswerMetadata(FfiCallFrame* frame) {
  for (FfiExtensionBase* e = frame->extension_start; e != nullptr; e = e->next) {
    if (e->type != kFfiMetadata) continue;
    FfiMetadata* md = reinterpret_cast<FfiMetadataExtension*>(e)->metadata;
    md->api_version.major_version = frame->api->api_version.major_version;
    md->api_version.minor_version = frame->api->api_version.minor_version;
    md->traits = 0;
    return true;
  }
  return false;
}

// C[r, n] = sum_k A[r, k] * Bt[n, k] for rows r < M of A [M, K], columns n in [n0, n1) of Bt [N, K], C [M, N]:
// the few-row products of a decode step (M = batch), where OpenBLAS and XLA pack all of B for a handful of rows.
// Here each row of Bt (a weight row, as nn.Linear stores it) streams from memory once and meets every row of A
// (in L1). Tiles of 4 rows of A by 4 rows of Bt keep 16 accumulators live, each loaded chunk used 4 times; a short
// tile repeats its last row (the extra sums are dropped).
using V16 = float __attribute__((vector_size(64)));
using V8 = float __attribute__((vector_size(32)));
using V4 = float __attribute__((vector_size(16)));

inline float HorizontalSum(V16 v) {
  V8 lo, hi;
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  const V8 s8 = lo + hi;
  V4 a, b;
  std::memcpy(&a, &s8, sizeof(a));
  std::memcpy(&b, reinterpret_cast<const char*>(&s8) + sizeof(a), sizeof(b));
  const V4 s4 = a + b;
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void FewRowsGemm(const float* a, const float* bt,
                                                                               float* c, int64_t M, int64_t N,
                                                                               int64_t K, int64_t n0, int64_t n1) {
  const int64_t kv = K / 16 * 16;
  for (int64_t n = n0; n < n1; n += 4) {
    const int64_t nn = n1 - n < 4 ? n1 - n : 4;
    const float* w[4];
    for (int i = 0; i < 4; i++) w[i] = bt + (n + (i < nn ? i : nn - 1)) * K;
    for (int64_t r0 = 0; r0 < M; r0 += 4) {
      const float* x[4];
      for (int j = 0; j < 4; j++) x[j] = a + (r0 + j < M ? r0 + j : M - 1) * K;
      V16 acc[4][4] = {};
      for (int64_t k = 0; k < kv; k += 16) {
        V16 wk[4], xk[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) std::memcpy(&wk[i], w[i] + k, sizeof(V16));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) std::memcpy(&xk[j], x[j] + k, sizeof(V16));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
#pragma GCC unroll 4
          for (int i = 0; i < 4; i++) acc[j][i] += xk[j] * wk[i];
      }
      for (int j = 0; j < 4 && r0 + j < M; j++) {
        for (int i = 0; i < nn; i++) {
          float sum = HorizontalSum(acc[j][i]);
          for (int64_t k = kv; k < K; k++) sum += x[j][k] * w[i][k];
          c[(r0 + j) * N + n + i] = sum;
        }
      }
    }
  }
}

// At most this many rows go to FewRowsGemm instead of OpenBLAS (the emitter sends such products only when B is
// stored [N, K]).
constexpr int64_t kFewRows = 16;

// One GEMM call's work, cut into `parts` slices of M (or of N when M is too short to share) that whoever is free
// claims: the calling thread and the tasks it schedules on XLA's intra-op pool. A slice is claimed before it runs,
// so the caller only ever waits for slices some thread is running: no deadlock when the pool is busy elsewhere, and
// a task that starts after every slice is taken just drops its reference. Heap-allocated, counted: late tasks may
// outlive the call.
struct GemmWork {
  bool ta, tb, split_m, few_rows;
  int64_t batch, M, N, K, parts;
  const float* a;
  const float* b;
  float* c;
  // Accumulating calls (C = C0 + A @ B): beta 1, and C0's values copied into C first unless XLA aliased the two.
  float beta = 0.0f;
  const float* c0 = nullptr;
  std::atomic<int64_t> next{0}, done{0}, refs{1};

  void Run(int64_t part) const {
    const int64_t len = split_m ? M : N;
    const int64_t lo = len * part / parts, hi = len * (part + 1) / parts;
    if (hi <= lo) return;
    const int64_t m = split_m ? hi - lo : M, n = split_m ? N : hi - lo;
    const int lda = ta ? M : K, ldb = tb ? K : N;
    if (few_rows) {
      for (int64_t i = 0; i < batch; i++) FewRowsGemm(a + i * M * K, b + i * K * N, c + i * M * N, M, N, K, lo, hi);
      return;
    }
    for (int64_t i = 0; i < batch; i++) {
      const float* pa = a + i * M * K;
      const float* pb = b + i * K * N;
      float* pc = c + i * M * N;
      const float* pc0 = c0 == nullptr ? nullptr : c0 + (pc - c);
      if (split_m) {
        pa += ta ? lo : lo * K;  // [K, M]: columns lo.. ; [M, K]: rows lo..
        pc += lo * N;
        if (pc0 != nullptr) pc0 += lo * N;
      } else {
        pb += tb ? lo * K : lo;  // [N, K]: rows lo.. ; [K, N]: columns lo..
        pc += lo;
        if (pc0 != nullptr) pc0 += lo;
      }
      if (pc0 != nullptr)
        for (int64_t row = 0; row < m; row++) std::memcpy(pc + row * N, pc0 + row * N, n * sizeof(float));
      g_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, K, 1.0f, pa, lda, pb, ldb, beta, pc, N);
    }
  }
  // Claims and runs slices until none is left.
  void Drain() {
    for (int64_t p; (p = next.fetch_add(1)) < parts;) {
      Run(p);
      done.fetch_add(1, std::memory_order_release);
    }
  }
  void Release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  static void Task(void* data) {
    auto* w = static_cast<GemmWork*>(data);
    w->Drain();
    w->Release();
  }
};

// Below this many multiply-adds a call runs on one thread: handing a slice to the pool costs more than it saves.
constexpr int64_t kSplitMinMacs = 1 << 20;

int64_t PoolThreads(const FfiCallFrame* frame) {
  const FfiApi* api = frame->api;
  if (api->struct_size < offsetof(FfiApi, thread_pool_num_threads) + sizeof(void*) || frame->ctx == nullptr) return 0;
  int64_t n = 0;
  FfiThreadPoolNumThreadsArgs a{sizeof(a), nullptr, frame->ctx, &n};
  void* err = api->thread_pool_num_threads(&a);
  if (err != nullptr) return 0;  // no pool: one thread (the error object is XLA's to keep; it has no other state)
  // The pool may have more threads than the process has cores (XLA sizes it for its devices); more slices than
  // cores only adds handoffs.
  return n < g_cores ? n : g_cores;
}

// C[b] = op(A[ia][b]) @ op(B[ib][b]) for row-major f32 buffers A [La, Bt, ., .], B [Lb, Bt, ., .] and C [Bt, M, N]
// and s32 indices ia, ib; op transposes when TA / TB. The leading dim lets an operand be one item of a stack (a
// layer's weights or saved activations inside a layer scan) read in place, where XLA would copy the slice out
// first; a plain operand is a stack of one. The emitter (src/backend/stablehlo/cpu_gemm.ts) brings every f32
// dot_general it sends here to this form. OpenBLAS runs single-threaded (set at registration); the parallelism
// is XLA's own pool, so the two never fight over the cores. With a fifth operand C0 [Bt, M, N] the call computes
// C = C0 + op(A) @ op(B) (OpenBLAS's beta = 1): the emitter sends `x + dot` so, with C0 aliased to the result, and
// the sum costs no pass of its own over C (a LoRA delta added to its base projection, gradients summed over
// projections).
template <bool TA, bool TB>
void* SgemmHandler(FfiCallFrame* frame) {
  if (AnswerMetadata(frame) || frame->stage != kFfiExecute) return nullptr;
  const FfiBuffer* a = BufferOf(frame->args, 0, kFfiF32, 4);
  const FfiBuffer* b = BufferOf(frame->args, 1, kFfiF32, 4);
  const FfiBuffer* ia = BufferOf(frame->args, 2, kFfiS32, 0);
  const FfiBuffer* ib = BufferOf(frame->args, 3, kFfiS32, 0);
  const FfiBuffer* c = BufferOf(frame->rets, 0, kFfiF32, 3);
  const bool acc = frame->args.size == 5;
  const FfiBuffer* c0 = acc ? BufferOf(frame->args, 4, kFfiF32, 3) : nullptr;
  if (a == nullptr || b == nullptr || ia == nullptr || ib == nullptr || c == nullptr || (acc && c0 == nullptr) ||
      (frame->args.size != 4 && !acc) || frame->rets.size != 1)
    return FfiError(frame,
                    "tessera_sgemm_f32: expected f32 operands [L, B, ., .], two s32 indices, optionally an f32 [B, M, N] "
                    "addend, and an f32 [B, M, N] result");
  const int64_t batch = a->dims[1];
  const int64_t M = TA ? a->dims[3] : a->dims[2], K = TA ? a->dims[2] : a->dims[3];
  const int64_t N = TB ? b->dims[2] : b->dims[3], Kb = TB ? b->dims[3] : b->dims[2];
  if (b->dims[1] != batch || Kb != K || c->dims[0] != batch || c->dims[1] != M || c->dims[2] != N)
    return FfiError(frame, "tessera_sgemm_f32: operand and result shapes do not agree");
  if (acc && (c0->dims[0] != batch || c0->dims[1] != M || c0->dims[2] != N))
    return FfiError(frame, "tessera_sgemm_f32: the addend's shape is not the result's");

  auto* w = new GemmWork();
  w->ta = TA;
  w->tb = TB;
  w->batch = batch;
  w->M = M;
  w->N = N;
  w->K = K;
  w->a = StackItem(a, ia, batch * M * K);
  w->b = StackItem(b, ib, batch * K * N);
  w->c = static_cast<float*>(c->data);
  w->few_rows = !TA && TB && M < kFewRows && !acc;  // FewRowsGemm only overwrites: an addend goes to OpenBLAS
  if (acc) {
    w->beta = 1.0f;
    if (c0->data != c->data) w->c0 = static_cast<const float*>(c0->data);
  }
  // A few-rows product is bound by reading B: worth sharing once B is a megabyte.
  const int64_t work = w->few_rows ? batch * N * K * 4 : batch * M * N * K;
  const int64_t threads = work >= kSplitMinMacs ? PoolThreads(frame) : 0;
  w->split_m = !w->few_rows && (M >= 16 * (threads > 1 ? threads : 1) || M >= N);
  w->parts = threads > 1 ? threads : 1;
  for (int64_t t = 1; t < w->parts; t++) {
    w->refs.fetch_add(1);
    FfiThreadPoolScheduleArgs s{sizeof(s), nullptr, frame->ctx, &GemmWork::Task, w};
    if (frame->api->thread_pool_schedule(&s) != nullptr) w->refs.fetch_sub(1);  // the caller drains it instead
  }
  w->Drain();
  while (w->done.load(std::memory_order_acquire) < w->parts) std::this_thread::yield();
  w->Release();
  return nullptr;
}

// A result XLA allocates and nobody writes: the initial value of a scan's stacked outputs, every element of which
// the loop overwrites. XLA has no such op; zero-filling a layer scan's saved activations costs a pass over them.
void* UninitializedHandler(FfiCallFrame* frame) {
  AnswerMetadata(frame);
  return nullptr;
}

std::mutex g_mu;

// registerCpuGemm(plugin, blasPath, symbolPrefix) -> undefined; throws naming what is missing.
napi_value RegisterCpuGemm(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "registerCpuGemm");
  Plugin* plugin = args.Get<Plugin>(0, "plugin");
  std::string path, prefix;
  if (plugin == nullptr || !args.String(1, "blasPath", &path) || !args.String(2, "symbolPrefix", &prefix))
    return nullptr;
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_sgemm == nullptr) {
    void* dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // never closed: registered handlers point into it
    if (dl == nullptr) {
      const char* e = dlerror();
      ThrowMessage(env, "registerCpuGemm", "cannot load BLAS library " + path + ": " + (e ? e : "unknown error"));
      return nullptr;
    }
    auto sgemm = reinterpret_cast<Sgemm>(dlsym(dl, (prefix + "cblas_sgemm").c_str()));
    if (sgemm == nullptr) {
      ThrowMessage(env, "registerCpuGemm", path + " exports no " + prefix + "cblas_sgemm");
      return nullptr;
    }
    // One thread per call: the handler spreads a call over XLA's pool itself (see SgemmHandler).
    using SetThreads = void (*)(int);
    if (auto set = reinterpret_cast<SetThreads>(dlsym(dl, (prefix + "openblas_set_num_threads").c_str()))) set(1);
    g_sgemm = sgemm;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) g_cores = CPU_COUNT(&set);
  }
  const PJRT_Api* api = plugin->api;
  const FfiExtension* ffi = nullptr;
  for (const PJRT_Extension_Base* e = api->extension_start; e != nullptr; e = e->next) {
    if (e->type == PJRT_Extension_Type_FFI) ffi = reinterpret_cast<const FfiExtension*>(e);
  }
  if (ffi == nullptr || ffi->base.struct_size < sizeof(FfiExtension) || ffi->register_handler == nullptr) {
    ThrowMessage(env, "registerCpuGemm", plugin->path + " has no PJRT FFI extension with register_handler");
    return nullptr;
  }
  struct Target {
    const char* name;
    void* handler;
  };
  const Target targets[] = {
      {"tessera_sgemm_f32_nn", reinterpret_cast<void*>(&SgemmHandler<false, false>)},
      {"tessera_sgemm_f32_nt", reinterpret_cast<void*>(&SgemmHandler<false, true>)},
      {"tessera_sgemm_f32_tn", reinterpret_cast<void*>(&SgemmHandler<true, false>)},
      {"tessera_sgemm_f32_tt", reinterpret_cast<void*>(&SgemmHandler<true, true>)},
      {"tessera_uninitialized", reinterpret_cast<void*>(&UninitializedHandler)},
  };
  static const char kPlatform[] = "Host";
  for (const Target& t : targets) {
    FfiRegisterHandlerArgs a{};
    a.struct_size = sizeof(a);
    a.target_name = t.name;
    a.target_name_size = std::strlen(t.name);
    a.handler = t.handler;
    a.platform_name = kPlatform;
    a.platform_name_size = sizeof(kPlatform) - 1;
    if (PJRT_Error* err = ffi->register_handler(&a)) {
      ThrowFailure(env, TakeError(api, err, "PJRT_FFI_Register_Handler"));
      return nullptr;
    }
  }
  return Undefined(env);
}

}  // namespace

void RegisterCpuGemmFunctions(napi_env env, napi_value exports) {
  AddFunction(env, exports, "registerCpuGemm", RegisterCpuGemm);
}

}  // namespace tessera
