// Executables: compile and deserialize on a worker thread, describe outputs/devices/memory/HLO, serialize, execute.
#include <condition_variable>
#include <deque>
#include <thread>

#include "tessera_pjrt.h"

namespace tessera {

// Everything the TypeScript side needs to know about a loaded executable, gathered off the main thread.
struct ExeDescription {
  std::string name;
  int64_t num_replicas = 0, num_partitions = 0;
  size_t num_outputs = 0;
  std::vector<int64_t> output_types;
  std::vector<std::vector<int64_t>> output_dims;
  bool has_output_types = false;
  std::vector<PJRT_Device*> devices;
  bool has_memory = false;
  int64_t memory[11] = {};
  std::string memory_error;
  std::string hlo, hlo_format, hlo_error;
  std::string fingerprint;
};

// Runs on a worker thread. Required facts fail the job; optional ones record why they are missing.
static bool Describe(const PJRT_Api* api, PJRT_LoadedExecutable* loaded, ExeDescription* d, Failure* failure) {
  Args<PJRT_LoadedExecutable_AddressableDevices_Args> ad;
  ad->executable = loaded;
  if (!TESSERA_CALL(api, PJRT_LoadedExecutable_AddressableDevices, ad.get(), *failure)) return false;
  d->devices.assign(ad->addressable_devices, ad->addressable_devices + ad->num_addressable_devices);

  Args<PJRT_LoadedExecutable_GetExecutable_Args> ge;
  ge->loaded_executable = loaded;
  if (!TESSERA_CALL(api, PJRT_LoadedExecutable_GetExecutable, ge.get(), *failure)) return false;
  PjrtPtr<PJRT_Executable> owned = Own(api, ge->executable);
  PJRT_Executable* e = owned.get();

  bool ok = true;
  Args<PJRT_Executable_NumOutputs_Args> no;
  no->executable = e;
  ok = TESSERA_CALL(api, PJRT_Executable_NumOutputs, no.get(), *failure);
  if (ok) d->num_outputs = no->num_outputs;

  Failure ignored;
  if (ok) {
    Args<PJRT_Executable_OutputElementTypes_Args> ot;
    ot->executable = e;
    Args<PJRT_Executable_OutputDimensions_Args> od;
    od->executable = e;
    od->num_outputs = d->num_outputs;
    if (TESSERA_CALL(api, PJRT_Executable_OutputElementTypes, ot.get(), ignored) &&
        TESSERA_CALL(api, PJRT_Executable_OutputDimensions, od.get(), ignored) &&
        ot->num_output_types == d->num_outputs) {
      d->has_output_types = true;
      size_t at = 0;
      for (size_t i = 0; i < d->num_outputs; i++) {
        d->output_types.push_back(ot->output_types[i]);
        d->output_dims.emplace_back(od->dims + at, od->dims + at + od->dim_sizes[i]);
        at += od->dim_sizes[i];
      }
    }
    Args<PJRT_Executable_Name_Args> nm;
    nm->executable = e;
    if (TESSERA_CALL(api, PJRT_Executable_Name, nm.get(), ignored))
      d->name.assign(nm->executable_name, nm->executable_name_size);
    Args<PJRT_Executable_NumReplicas_Args> nr;
    nr->executable = e;
    if (TESSERA_CALL(api, PJRT_Executable_NumReplicas, nr.get(), ignored)) d->num_replicas = nr->num_replicas;
    Args<PJRT_Executable_NumPartitions_Args> np;
    np->executable = e;
    if (TESSERA_CALL(api, PJRT_Executable_NumPartitions, np.get(), ignored)) d->num_partitions = np->num_partitions;

    Args<PJRT_Executable_GetCompiledMemoryStats_Args> ms;
    ms->executable = e;
    Failure mf;
    if (TESSERA_CALL(api, PJRT_Executable_GetCompiledMemoryStats, ms.get(), mf)) {
      d->has_memory = true;
      int64_t vals[11] = {ms->generated_code_size_in_bytes, ms->argument_size_in_bytes, ms->output_size_in_bytes,
                          ms->alias_size_in_bytes, ms->temp_size_in_bytes, ms->host_generated_code_size_in_bytes,
                          ms->host_argument_size_in_bytes, ms->host_output_size_in_bytes,
                          ms->host_alias_size_in_bytes, ms->host_temp_size_in_bytes, ms->peak_memory_in_bytes};
      std::memcpy(d->memory, vals, sizeof(vals));
    } else {
      d->memory_error = mf.op + ": " + mf.message;
    }

    // The optimized (post-SPMD) HLO module: per-device parameter shapes and the collectives in it.
    Args<PJRT_Program> prog;
    static const char kHlo[] = "hlo";
    prog->format = kHlo;
    prog->format_size = 3;
    Args<PJRT_Executable_OptimizedProgram_Args> op;
    op->executable = e;
    op->program = prog.get();
    Failure hf;
    if (TESSERA_CALL(api, PJRT_Executable_OptimizedProgram, op.get(), hf)) {
      d->hlo.resize(prog->code_size);
      prog->code = d->hlo.data();
      if (TESSERA_CALL(api, PJRT_Executable_OptimizedProgram, op.get(), hf)) {
        d->hlo.resize(prog->code_size);
        if (prog->format != nullptr) d->hlo_format.assign(prog->format, prog->format_size);
      } else {
        d->hlo.clear();
      }
    }
    if (hf.failed) d->hlo_error = hf.op + ": " + hf.message;

    Args<PJRT_Executable_Fingerprint_Args> fp;
    fp->executable = e;
    if (TESSERA_CALL(api, PJRT_Executable_Fingerprint, fp.get(), ignored) && fp->executable_fingerprint != nullptr)
      d->fingerprint.assign(fp->executable_fingerprint, fp->executable_fingerprint_size);
  }
  return ok;
}

static int64_t ElementBytesOf(int64_t type) {
  switch (type) {
    case PJRT_Buffer_Type_PRED: case PJRT_Buffer_Type_S8: case PJRT_Buffer_Type_U8: return 1;
    case PJRT_Buffer_Type_S16: case PJRT_Buffer_Type_U16: case PJRT_Buffer_Type_F16: case PJRT_Buffer_Type_BF16: return 2;
    case PJRT_Buffer_Type_S32: case PJRT_Buffer_Type_U32: case PJRT_Buffer_Type_F32: return 4;
    case PJRT_Buffer_Type_S64: case PJRT_Buffer_Type_U64: case PJRT_Buffer_Type_F64: return 8;
    default: return 0;
  }
}

static napi_value DescriptionToJs(napi_env env, Client* client, PjrtPtr<PJRT_LoadedExecutable> loaded,
                                  const ExeDescription& d) {
  auto x = std::make_unique<Executable>(client, loaded.release());
  x->num_outputs = d.num_outputs;
  x->devices = d.devices;
  for (size_t i = 0; i < d.num_outputs; i++) {
    int64_t bytes = 0;
    if (d.has_output_types) {
      bytes = ElementBytesOf(d.output_types[i]);
      for (int64_t dim : d.output_dims[i]) bytes *= dim;
    }
    x->output_bytes.push_back(bytes);
  }
  napi_value out = MakeObject(env);
  SetProp(env, out, "handle", WrapExecutable(env, x.release()));
  SetProp(env, out, "name", MakeString(env, d.name.data(), d.name.size()));
  SetProp(env, out, "numReplicas", MakeInt64(env, d.num_replicas));
  SetProp(env, out, "numPartitions", MakeInt64(env, d.num_partitions));
  SetProp(env, out, "numOutputs", MakeInt64(env, static_cast<int64_t>(d.num_outputs)));
  if (d.has_output_types) {
    napi_value types = MakeArray(env, d.num_outputs), dims = MakeArray(env, d.num_outputs);
    for (size_t i = 0; i < d.num_outputs; i++) {
      SetElement(env, types, i, MakeInt64(env, d.output_types[i]));
      napi_value one = MakeArray(env, d.output_dims[i].size());
      for (size_t j = 0; j < d.output_dims[i].size(); j++) SetElement(env, one, j, MakeInt64(env, d.output_dims[i][j]));
      SetElement(env, dims, i, one);
    }
    SetProp(env, out, "outputTypes", types);
    SetProp(env, out, "outputDims", dims);
  }
  napi_value devs = MakeArray(env, d.devices.size());
  for (size_t i = 0; i < d.devices.size(); i++) {
    int64_t index = -1;
    for (size_t k = 0; k < client->devices.size(); k++)
      if (client->devices[k] == d.devices[i]) index = static_cast<int64_t>(k);
    SetElement(env, devs, i, MakeInt64(env, index));
  }
  SetProp(env, out, "deviceIndices", devs);
  if (d.has_memory) {
    static const char* const kNames[11] = {
        "generatedCodeBytes", "argumentBytes",     "outputBytes",   "aliasBytes",    "tempBytes",
        "hostGeneratedCodeBytes", "hostArgumentBytes", "hostOutputBytes", "hostAliasBytes", "hostTempBytes",
        "peakMemoryBytes"};
    napi_value mem = MakeObject(env);
    for (int i = 0; i < 11; i++) SetProp(env, mem, kNames[i], MakeInt64(env, d.memory[i]));
    SetProp(env, out, "memoryStats", mem);
  } else {
    SetProp(env, out, "memoryStatsError", MakeString(env, d.memory_error.data(), d.memory_error.size()));
  }
  if (!d.hlo.empty()) {
    SetProp(env, out, "hlo", MakeBytes(env, d.hlo.data(), d.hlo.size()));
    SetProp(env, out, "hloFormat", MakeString(env, d.hlo_format.data(), d.hlo_format.size()));
  } else {
    SetProp(env, out, "hloError", MakeString(env, d.hlo_error.data(), d.hlo_error.size()));
  }
  if (!d.fingerprint.empty()) SetProp(env, out, "fingerprint", MakeString(env, d.fingerprint.data(), d.fingerprint.size()));
  return out;
}

// ------------------------------------------------------------------------- compile/deserialize

struct LoadJob : Job {
  Client* client;
  bool deserialize = false;
  std::string code;     // program text, or serialized executable
  std::string options;  // serialized CompileOptionsProto (compile only; never empty, checked in TS and here)
  PjrtPtr<PJRT_LoadedExecutable> loaded;
  ExeDescription desc;

  void Run() override {
    const PJRT_Api* api = client->api;
    if (deserialize) {
      Args<PJRT_Executable_DeserializeAndLoad_Args> a;
      a->client = client->client.get();
      a->serialized_executable = code.data();
      a->serialized_executable_size = code.size();
      if (!TESSERA_CALL(api, PJRT_Executable_DeserializeAndLoad, a.get(), failure)) return;
      loaded = Own(api, a->loaded_executable);
    } else {
      Args<PJRT_Program> prog;
      static const char kMlir[] = "mlir";
      prog->code = code.data();
      prog->code_size = code.size();
      prog->format = kMlir;
      prog->format_size = 4;
      Args<PJRT_Client_Compile_Args> a;
      a->client = client->client.get();
      a->program = prog.get();
      a->compile_options = options.data();
      a->compile_options_size = options.size();
      if (!TESSERA_CALL(api, PJRT_Client_Compile, a.get(), failure)) return;
      loaded = Own(api, a->executable);
    }
    Describe(api, loaded.get(), &desc, &failure);
  }
  napi_value Finish(napi_env env) override { return DescriptionToJs(env, client, std::move(loaded), desc); }
};

// compile(client, program: string, compileOptions: Uint8Array) -> Promise<description>
static napi_value Compile(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "compile");
  auto job = std::make_unique<LoadJob>();
  job->client = args.Get<Client>(0, "client");
  if (job->client == nullptr || !args.String(1, "program", &job->code) || !args.Bytes(2, "compileOptions", &job->options))
    return nullptr;
  if (job->options.empty()) {  // empty CompileOptions CHECK-fail inside XLA and abort the process
    ThrowMessage(env, args.op(), "refusing empty compile options (XLA aborts on them)");
    return nullptr;
  }
  return StartJob(env, std::move(job), "tessera.compile");
}

// deserialize(client, bytes: Uint8Array) -> Promise<description>
static napi_value Deserialize(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "deserialize");
  auto job = std::make_unique<LoadJob>();
  job->client = args.Get<Client>(0, "client");
  job->deserialize = true;
  if (job->client == nullptr || !args.Bytes(1, "bytes", &job->code)) return nullptr;
  if (job->code.empty()) {
    ThrowMessage(env, args.op(), "expected a non-empty serialized executable");
    return nullptr;
  }
  return StartJob(env, std::move(job), "tessera.deserialize");
}

// serialize(executable) -> Uint8Array
static napi_value Serialize(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "serialize");
  Executable* x = args.GetLive<Executable>(0, "executable");
  if (x == nullptr) return nullptr;
  const PJRT_Api* api = x->api;
  Failure f;
  Args<PJRT_LoadedExecutable_GetExecutable_Args> ge;
  ge->loaded_executable = x->ptr.get();
  if (!TESSERA_CALL(api, PJRT_LoadedExecutable_GetExecutable, ge.get(), f)) return ThrowFailure(env, f), nullptr;
  PjrtPtr<PJRT_Executable> plain = Own(api, ge->executable);
  Args<PJRT_Executable_Serialize_Args> s;
  s->executable = plain.get();
  if (!TESSERA_CALL(api, PJRT_Executable_Serialize, s.get(), f)) return ThrowFailure(env, f), nullptr;
  SerializedPtr serialized(s->serialized_executable, SerializedDeleter{s->serialized_executable_deleter});
  return MakeBytes(env, s->serialized_bytes, s->serialized_bytes_size);
}

// executableDestroy(executable): PJRT frees it after the last execution in flight. Idempotent.
static napi_value ExecutableDestroy(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "executableDestroy");
  Executable* x = args.Get<Executable>(0, "executable");
  if (x != nullptr) x->Destroy(env);
  return nullptr;
}

// ------------------------------------------------------------------------------------ execute
//
// Execute returns once the work is enqueued; outputs are handles whose data is filled in later.
// It can still block: a plugin admits a bounded number of executions per device in flight (32 on
// the CPU plugin; the caller then waits inside Execute). So each execution asks for its
// device-complete events, and the client counts executions in flight. TypeScript launches on the
// main thread while the count is low (no thread hop: the per-call overhead stays a few µs) and
// otherwise queues to the client's dispatcher thread, which may block without blocking Node.

struct Completion {
  Completion(Client* c, size_t n) : client(c), remaining(n) {}
  Client* client;
  std::atomic<size_t> remaining;
  std::vector<PjrtPtr<PJRT_Event>> events;
};

static void RetireCompletion(Completion* c) {
  Client* client = c->client;
  {
    std::lock_guard<std::mutex> lock(client->retired_mu);
    for (auto& ev : c->events) client->retired.push_back(std::move(ev));
  }
  client->inflight.fetch_sub(1);
  delete c;
}

static void OnDeviceComplete(PJRT_Error* error, void* user_arg) {
  auto* c = static_cast<Completion*>(user_arg);
  // An execution error also poisons the outputs, so it surfaces when they are awaited or read.
  if (error != nullptr) TakeError(c->client->api, error, "PJRT_LoadedExecutable_Execute (device complete)");
  if (c->remaining.fetch_sub(1) == 1) RetireCompletion(c);
}

// Main thread: destroy the completion events whose callbacks have run (an event cannot be
// destroyed inside its own callback).
static void DrainRetired(Client* client) {
  std::vector<PjrtPtr<PJRT_Event>> events;  // declared first: destroyed after the lock is released
  std::lock_guard<std::mutex> lock(client->retired_mu);
  events.swap(client->retired);
}

struct ExecCall {
  Executable* exe = nullptr;
  std::vector<std::vector<PJRT_Buffer*>> args;  // [device][arg]
  std::vector<int64_t> non_donatable;
  bool all_non_donatable = false;
  std::vector<std::vector<PjrtPtr<PJRT_Buffer>>> outputs;  // [device][output], until Result hands them to JS
  std::vector<uint8_t> deleted;                            // [device * num_args + arg]: donated by this call
  Failure failure;

  void Run() {  // any thread
    const PJRT_Api* api = exe->api;
    size_t nd = args.size(), na = nd == 0 ? 0 : args[0].size(), no = exe->num_outputs;
    std::vector<PJRT_Buffer* const*> arg_ptrs(nd);
    std::vector<std::vector<PJRT_Buffer*>> raw_outputs(nd, std::vector<PJRT_Buffer*>(no + 1, nullptr));  // +1: never a null data()
    std::vector<PJRT_Buffer**> out_ptrs(nd);
    for (size_t d = 0; d < nd; d++) {
      arg_ptrs[d] = args[d].data();
      out_ptrs[d] = raw_outputs[d].data();
    }
    std::vector<PJRT_Event*> events(nd, nullptr);
    Args<PJRT_ExecuteOptions> opts;  // padded: a 0.115 plugin checks it against its larger struct
    opts->non_donatable_input_indices = non_donatable.empty() ? nullptr : non_donatable.data();
    opts->num_non_donatable_input_indices = non_donatable.size();
    Args<PJRT_LoadedExecutable_Execute_Args> a;
    a->executable = exe->ptr.get();
    a->options = opts.get();
    a->argument_lists = arg_ptrs.data();
    a->num_devices = nd;
    a->num_args = na;
    a->output_lists = out_ptrs.data();
    a->device_complete_events = events.data();
    if (!TESSERA_CALL(api, PJRT_LoadedExecutable_Execute, a.get(), failure)) return;
    outputs.resize(nd);
    for (size_t d = 0; d < nd; d++)
      for (size_t i = 0; i < no; i++) outputs[d].push_back(Own(api, raw_outputs[d][i]));

    Client* client = exe->client;
    client->inflight.fetch_add(1);
    auto* c = new Completion(client, nd);
    for (PJRT_Event* ev : events) c->events.push_back(Own(api, ev));
    if (nd == 0) RetireCompletion(c);
    for (size_t d = 0; d < nd; d++) {  // `c` may be gone after the last registration: use `events`
      Args<PJRT_Event_OnReady_Args> r;
      r->event = events[d];
      r->callback = OnDeviceComplete;
      r->user_arg = c;
      Failure ignored;  // then count the device as complete now
      if (events[d] == nullptr || !TESSERA_CALL(api, PJRT_Event_OnReady, r.get(), ignored)) OnDeviceComplete(nullptr, c);
    }

    deleted.assign(nd * na, 0);
    if (all_non_donatable || !TESSERA_HAS(api, PJRT_Buffer_IsDeleted)) return;
    for (size_t d = 0; d < nd; d++) {
      for (size_t i = 0; i < na; i++) {
        Args<PJRT_Buffer_IsDeleted_Args> del;
        del->buffer = args[d][i];
        Failure ignored;  // not known as donated: the TypeScript side keeps the argument
        if (TESSERA_CALL(api, PJRT_Buffer_IsDeleted, del.get(), ignored)) deleted[d * na + i] = del->is_deleted ? 1 : 0;
      }
    }
  }

  // A flat array of output handles, [device * num_outputs + output]; when this call donated
  // arguments, the array also has a `donated` property: the flat [device * num_args + arg] indices.
  napi_value Result(napi_env env) {
    size_t no = exe->num_outputs;
    napi_value out = MakeArray(env, outputs.size() * no);
    for (size_t d = 0; d < outputs.size(); d++) {
      for (size_t i = 0; i < no; i++) {
        auto b = std::make_unique<Buffer>(exe->api, outputs[d][i].release());
        b->external_bytes = exe->output_bytes[i];
        SetElement(env, out, d * no + i, WrapBuffer(env, b.release()));
      }
    }
    napi_value donated = nullptr;
    size_t k = 0;
    for (size_t j = 0; j < deleted.size(); j++) {
      if (!deleted[j]) continue;
      if (donated == nullptr) donated = MakeArray(env, 0);
      SetElement(env, donated, k++, MakeInt64(env, static_cast<int64_t>(j)));
    }
    if (donated != nullptr) SetProp(env, out, "donated", donated);
    return out;
  }
};

struct ExecTask : MainTask {
  ExecCall call;
  napi_deferred deferred = nullptr;
  napi_ref keep = nullptr;      // the JS argument lists (and so the buffer handles) stay alive meanwhile
  napi_ref keep_exe = nullptr;  // and so does the executable handle
  void OnMain(napi_env env) override {
    if (env == nullptr) return;  // tearing down: the outputs are freed with the task
    if (call.failure.failed) NAPI_CHECK(env, napi_reject_deferred(env, deferred, ErrorValue(env, call.failure)));
    else NAPI_CHECK(env, napi_resolve_deferred(env, deferred, call.Result(env)));
    NAPI_CHECK(env, napi_delete_reference(env, keep));
    NAPI_CHECK(env, napi_delete_reference(env, keep_exe));
    ReleaseLoop(env);
  }
};

struct Dispatcher {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ExecTask*> queue;
};

static void DispatchLoop(Dispatcher* d) {  // runs for the life of the process, as the client does
  for (;;) {
    ExecTask* task;
    {
      std::unique_lock<std::mutex> lock(d->mu);
      d->cv.wait(lock, [d] { return !d->queue.empty(); });
      task = d->queue.front();
      d->queue.pop_front();
    }
    task->call.Run();
    PostToMain(task);
  }
}

// Reads argLists (one list of buffer handles per device of the executable) into call->args.
static bool ReadArgLists(napi_env env, const JsArgs& args, ExecCall* call) {
  const Executable* x = call->exe;
  uint32_t nd = 0;
  if (!ToArrayLength(env, args[1], args.op(), "argLists", &nd)) return false;
  if (nd != x->devices.size()) {
    ThrowMessage(env, args.op(), "expected one argument list per device of the executable (" +
                                     std::to_string(x->devices.size()) + "), got " + std::to_string(nd));
    return false;
  }
  call->args.resize(nd);
  uint32_t na = 0;
  for (uint32_t d = 0; d < nd; d++) {
    napi_value list = nullptr;
    uint32_t n = 0;
    std::string at = "argLists[" + std::to_string(d) + "]";
    if (!NAPI_CHECK(env, napi_get_element(env, args[1], d, &list)) || !ToArrayLength(env, list, args.op(), at, &n))
      return false;
    if (d == 0) na = n;
    if (n != na) {
      ThrowMessage(env, args.op(), "argument lists differ in length between devices");
      return false;
    }
    call->args[d].resize(n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value e = nullptr;
      if (!NAPI_CHECK(env, napi_get_element(env, list, i, &e))) return false;
      Buffer* b = Unwrap<Buffer>(env, e, args.op(), at + "[" + std::to_string(i) + "]");
      if (b == nullptr) return false;
      if (!b->alive()) {
        ThrowMessage(env, args.op(), "argument " + std::to_string(i) + " on device " + std::to_string(d) +
                                         " has been disposed");
        return false;
      }
      call->args[d][i] = b->ptr.get();
    }
  }
  return true;
}

// execute(executable, argLists: buffer[][], nonDonatable: number[] | null, dispatch: boolean | number)
//   dispatch true: queue on the dispatcher thread -> Promise of the flat output handles (ExecCall::Result)
//   dispatch false: launch on this thread -> the flat output handles
//   dispatch N: launch on this thread if fewer than N executions are in flight -> the handles;
//               otherwise launch nothing and return null (the caller then queues)
static napi_value Execute(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "execute");
  Executable* x = args.GetLive<Executable>(0, "executable");
  if (x == nullptr) return nullptr;
  bool on_worker = false;
  int64_t limit = -1;
  napi_valuetype dispatch_type = napi_undefined;
  if (!NAPI_CHECK(env, napi_typeof(env, args[3], &dispatch_type))) return nullptr;
  if (dispatch_type == napi_boolean) {
    if (!args.Bool(3, "dispatch", &on_worker)) return nullptr;
  } else if (dispatch_type != napi_number || !args.Int64(3, "dispatch", &limit) || limit < 0) {
    ThrowTypeError(env, args.op(), "dispatch must be a boolean or a non-negative integer limit");
    return nullptr;
  }
  ExecCall call;
  call.exe = x;
  if (!ReadArgLists(env, args, &call)) return nullptr;
  if (!IsNullish(env, args[2])) {
    if (!args.Int64Array(2, "nonDonatable", &call.non_donatable)) return nullptr;
    call.all_non_donatable = call.non_donatable.size() >= (call.args.empty() ? 0 : call.args[0].size());
  }
  DrainRetired(x->client);
  if (limit >= 0 && x->client->inflight.load() >= limit) return Null(env);
  if (!on_worker) {
    call.Run();
    if (call.failure.failed) return ThrowFailure(env, call.failure), nullptr;
    return call.Result(env);
  }
  auto task = std::make_unique<ExecTask>();
  task->call = std::move(call);
  task->holds_loop = true;
  napi_value promise = nullptr;
  if (!NAPI_CHECK(env, napi_create_promise(env, &task->deferred, &promise)) ||
      !NAPI_CHECK(env, napi_create_reference(env, args[1], 1, &task->keep)) ||
      !NAPI_CHECK(env, napi_create_reference(env, args[0], 1, &task->keep_exe)))
    return nullptr;  // a reference made before the failure is left to the env's teardown
  HoldLoop(env, task.get());
  Client* client = x->client;
  if (client->dispatcher == nullptr) {
    client->dispatcher = new Dispatcher();
    std::thread(DispatchLoop, client->dispatcher).detach();
  }
  {
    std::lock_guard<std::mutex> lock(client->dispatcher->mu);
    client->dispatcher->queue.push_back(task.release());
  }
  client->dispatcher->cv.notify_one();
  return promise;
}

// inflight(client) -> number of executions launched and not complete; also frees fired events.
static napi_value Inflight(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "inflight");
  Client* c = args.Get<Client>(0, "client");
  if (c == nullptr) return nullptr;
  DrainRetired(c);
  return MakeInt64(env, c->inflight.load());
}

void RegisterExecutableFunctions(napi_env env, napi_value exports) {
  AddFunction(env, exports, "compile", Compile);
  AddFunction(env, exports, "deserialize", Deserialize);
  AddFunction(env, exports, "serialize", Serialize);
  AddFunction(env, exports, "executableDestroy", ExecutableDestroy);
  AddFunction(env, exports, "execute", Execute);
  AddFunction(env, exports, "inflight", Inflight);
}

}  // namespace tessera
