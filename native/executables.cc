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

static void DestroyPlainExecutable(const PJRT_Api* api, PJRT_Executable* e) {
  if (e == nullptr || !TESSERA_HAS(api, PJRT_Executable_Destroy)) return;
  Args<PJRT_Executable_Destroy_Args> d;
  d->executable = e;
  PJRT_Error* err = api->PJRT_Executable_Destroy(d.get());
  if (err != nullptr) TakeError(api, err, "PJRT_Executable_Destroy");
}

// Runs on a worker thread. Required facts fail the job; optional ones record why they are missing.
static bool Describe(const PJRT_Api* api, PJRT_LoadedExecutable* loaded, ExeDescription* d, Failure* failure) {
  Args<PJRT_LoadedExecutable_AddressableDevices_Args> ad;
  ad->executable = loaded;
  if (!TESSERA_CALL(api, PJRT_LoadedExecutable_AddressableDevices, ad.get(), *failure)) return false;
  d->devices.assign(ad->addressable_devices, ad->addressable_devices + ad->num_addressable_devices);

  Args<PJRT_LoadedExecutable_GetExecutable_Args> ge;
  ge->loaded_executable = loaded;
  if (!TESSERA_CALL(api, PJRT_LoadedExecutable_GetExecutable, ge.get(), *failure)) return false;
  PJRT_Executable* e = ge->executable;  // ours to destroy

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
  DestroyPlainExecutable(api, e);
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

static napi_value DescriptionToJs(napi_env env, Client* client, PJRT_LoadedExecutable* loaded,
                                  const ExeDescription& d) {
  auto* x = new Executable();
  x->api = client->api;
  x->client = client;
  x->exe = loaded;
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
  napi_value out, types, dims, devs;
  napi_create_object(env, &out);
  SetProp(env, out, "handle", WrapExecutable(env, x));
  SetProp(env, out, "name", MakeString(env, d.name.data(), d.name.size()));
  SetProp(env, out, "numReplicas", MakeInt64(env, d.num_replicas));
  SetProp(env, out, "numPartitions", MakeInt64(env, d.num_partitions));
  SetProp(env, out, "numOutputs", MakeInt64(env, static_cast<int64_t>(d.num_outputs)));
  if (d.has_output_types) {
    napi_create_array_with_length(env, d.num_outputs, &types);
    napi_create_array_with_length(env, d.num_outputs, &dims);
    for (size_t i = 0; i < d.num_outputs; i++) {
      napi_set_element(env, types, i, MakeInt64(env, d.output_types[i]));
      napi_value one;
      napi_create_array_with_length(env, d.output_dims[i].size(), &one);
      for (size_t j = 0; j < d.output_dims[i].size(); j++) napi_set_element(env, one, j, MakeInt64(env, d.output_dims[i][j]));
      napi_set_element(env, dims, i, one);
    }
    SetProp(env, out, "outputTypes", types);
    SetProp(env, out, "outputDims", dims);
  }
  napi_create_array_with_length(env, d.devices.size(), &devs);
  for (size_t i = 0; i < d.devices.size(); i++) {
    int64_t index = -1;
    for (size_t k = 0; k < client->devices.size(); k++)
      if (client->devices[k] == d.devices[i]) index = static_cast<int64_t>(k);
    napi_set_element(env, devs, i, MakeInt64(env, index));
  }
  SetProp(env, out, "deviceIndices", devs);
  if (d.has_memory) {
    static const char* const kNames[11] = {
        "generatedCodeBytes", "argumentBytes",     "outputBytes",   "aliasBytes",    "tempBytes",
        "hostGeneratedCodeBytes", "hostArgumentBytes", "hostOutputBytes", "hostAliasBytes", "hostTempBytes",
        "peakMemoryBytes"};
    napi_value mem;
    napi_create_object(env, &mem);
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
  PJRT_LoadedExecutable* loaded = nullptr;
  ExeDescription desc;

  void Run() override {
    const PJRT_Api* api = client->api;
    if (deserialize) {
      Args<PJRT_Executable_DeserializeAndLoad_Args> a;
      a->client = client->client;
      a->serialized_executable = code.data();
      a->serialized_executable_size = code.size();
      if (!TESSERA_CALL(api, PJRT_Executable_DeserializeAndLoad, a.get(), failure)) return;
      loaded = a->loaded_executable;
    } else {
      Args<PJRT_Program> prog;
      static const char kMlir[] = "mlir";
      prog->code = code.data();
      prog->code_size = code.size();
      prog->format = kMlir;
      prog->format_size = 4;
      Args<PJRT_Client_Compile_Args> a;
      a->client = client->client;
      a->program = prog.get();
      a->compile_options = options.data();
      a->compile_options_size = options.size();
      if (!TESSERA_CALL(api, PJRT_Client_Compile, a.get(), failure)) return;
      loaded = a->executable;
    }
    Describe(api, loaded, &desc, &failure);
  }
  napi_value Finish(napi_env env) override {
    PJRT_LoadedExecutable* l = loaded;
    loaded = nullptr;
    return DescriptionToJs(env, client, l, desc);
  }
  void Cleanup(napi_env) override {
    if (loaded != nullptr && TESSERA_HAS(client->api, PJRT_LoadedExecutable_Destroy)) {
      Args<PJRT_LoadedExecutable_Destroy_Args> d;
      d->executable = loaded;
      PJRT_Error* err = client->api->PJRT_LoadedExecutable_Destroy(d.get());
      if (err != nullptr) TakeError(client->api, err, "PJRT_LoadedExecutable_Destroy");
    }
  }
};

static bool GetBytes(napi_env env, napi_value v, std::string* out) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) return false;
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void* data = nullptr;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset) != napi_ok || type != napi_uint8_array)
    return false;
  out->assign(static_cast<const char*>(data), length);
  return true;
}

// compile(client, program: string, compileOptions: Uint8Array) -> Promise<description>
static napi_value Compile(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Client* c = argc >= 1 ? UnwrapClient(env, argv[0]) : nullptr;
  if (c == nullptr) return nullptr;
  auto* job = new LoadJob();
  job->client = c;
  if (argc < 3 || !GetString(env, argv[1], &job->code) || !GetBytes(env, argv[2], &job->options)) {
    delete job;
    ThrowMessage(env, "compile", "expected (client, program text, compile options bytes)");
    return nullptr;
  }
  if (job->options.empty()) {  // empty CompileOptions CHECK-fail inside XLA and abort the process
    delete job;
    ThrowMessage(env, "compile", "refusing empty compile options (XLA aborts on them)");
    return nullptr;
  }
  return StartJob(env, job, "tessera.compile");
}

// deserialize(client, bytes: Uint8Array) -> Promise<description>
static napi_value Deserialize(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Client* c = argc >= 1 ? UnwrapClient(env, argv[0]) : nullptr;
  if (c == nullptr) return nullptr;
  auto* job = new LoadJob();
  job->client = c;
  job->deserialize = true;
  if (argc < 2 || !GetBytes(env, argv[1], &job->code) || job->code.empty()) {
    delete job;
    ThrowMessage(env, "deserialize", "expected (client, non-empty Uint8Array)");
    return nullptr;
  }
  return StartJob(env, job, "tessera.deserialize");
}

static Executable* LiveExecutable(napi_env env, napi_value v, const char* op) {
  Executable* x = UnwrapExecutable(env, v);
  if (x != nullptr && x->exe == nullptr) {
    ThrowMessage(env, op, "executable has been disposed");
    return nullptr;
  }
  return x;
}

// serialize(executable) -> Uint8Array
static napi_value Serialize(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Executable* x = argc >= 1 ? LiveExecutable(env, argv[0], "serialize") : nullptr;
  if (x == nullptr) return nullptr;
  const PJRT_Api* api = x->api;
  Failure f;
  Args<PJRT_LoadedExecutable_GetExecutable_Args> ge;
  ge->loaded_executable = x->exe;
  if (!TESSERA_CALL(api, PJRT_LoadedExecutable_GetExecutable, ge.get(), f)) return ThrowFailure(env, f), nullptr;
  Args<PJRT_Executable_Serialize_Args> s;
  s->executable = ge->executable;
  napi_value out = nullptr;
  if (TESSERA_CALL(api, PJRT_Executable_Serialize, s.get(), f)) {
    out = MakeBytes(env, s->serialized_bytes, s->serialized_bytes_size);
    if (s->serialized_executable_deleter != nullptr) s->serialized_executable_deleter(s->serialized_executable);
  }
  DestroyPlainExecutable(api, ge->executable);
  if (out == nullptr) ThrowFailure(env, f);
  return out;
}

// executableDestroy(executable): PJRT frees it after the last execution in flight. Idempotent.
static napi_value ExecutableDestroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Executable* x = argc >= 1 ? UnwrapExecutable(env, argv[0]) : nullptr;
  if (x != nullptr) DestroyExecutable(x);
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
  Client* client;
  std::atomic<size_t> remaining;
  std::vector<PJRT_Event*> events;
};

static void RetireCompletion(Completion* c) {
  Client* client = c->client;
  {
    std::lock_guard<std::mutex> lock(client->retired_mu);
    client->retired.insert(client->retired.end(), c->events.begin(), c->events.end());
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

// Main thread: destroy the completion events whose callbacks have run.
static void DrainRetired(Client* client) {
  std::vector<PJRT_Event*> events;
  {
    std::lock_guard<std::mutex> lock(client->retired_mu);
    events.swap(client->retired);
  }
  for (PJRT_Event* ev : events) {
    if (ev == nullptr || !TESSERA_HAS(client->api, PJRT_Event_Destroy)) continue;
    Args<PJRT_Event_Destroy_Args> d;
    d->event = ev;
    PJRT_Error* err = client->api->PJRT_Event_Destroy(d.get());
    if (err != nullptr) TakeError(client->api, err, "PJRT_Event_Destroy");
  }
}

struct ExecCall {
  Executable* exe = nullptr;
  std::vector<std::vector<PJRT_Buffer*>> args;  // [device][arg]
  std::vector<int64_t> non_donatable;
  bool all_non_donatable = false;
  std::vector<std::vector<PJRT_Buffer*>> outputs;  // [device][output]
  std::vector<uint8_t> deleted;                   // [device * num_args + arg]: donated by this call
  Failure failure;

  void Run() {  // any thread
    const PJRT_Api* api = exe->api;
    size_t nd = args.size(), na = nd == 0 ? 0 : args[0].size();
    std::vector<PJRT_Buffer* const*> arg_ptrs(nd);
    std::vector<PJRT_Buffer**> out_ptrs(nd);
    outputs.assign(nd, std::vector<PJRT_Buffer*>(exe->num_outputs + 1, nullptr));  // +1: never a null data()
    for (size_t d = 0; d < nd; d++) {
      arg_ptrs[d] = args[d].data();
      out_ptrs[d] = outputs[d].data();
    }
    std::vector<PJRT_Event*> events(nd, nullptr);
    Args<PJRT_ExecuteOptions> opts;  // padded: a 0.115 plugin checks it against its larger struct
    opts->non_donatable_input_indices = non_donatable.empty() ? nullptr : non_donatable.data();
    opts->num_non_donatable_input_indices = non_donatable.size();
    Args<PJRT_LoadedExecutable_Execute_Args> a;
    a->executable = exe->exe;
    a->options = opts.get();
    a->argument_lists = arg_ptrs.data();
    a->num_devices = nd;
    a->num_args = na;
    a->output_lists = out_ptrs.data();
    a->device_complete_events = events.data();
    if (!TESSERA_CALL(api, PJRT_LoadedExecutable_Execute, a.get(), failure)) return;

    Client* client = exe->client;
    client->inflight.fetch_add(1);
    auto* c = new Completion{client, {nd}, events};
    if (nd == 0) RetireCompletion(c);
    for (size_t d = 0; d < nd; d++) {  // `c` may be gone after the last registration: use `events`
      bool registered = false;
      if (events[d] != nullptr && TESSERA_HAS(api, PJRT_Event_OnReady)) {
        Args<PJRT_Event_OnReady_Args> r;
        r->event = events[d];
        r->callback = OnDeviceComplete;
        r->user_arg = c;
        PJRT_Error* err = api->PJRT_Event_OnReady(r.get());
        if (err == nullptr) registered = true;
        else TakeError(api, err, "PJRT_Event_OnReady");
      }
      if (!registered) OnDeviceComplete(nullptr, c);
    }

    deleted.assign(nd * na, 0);
    if (all_non_donatable || !TESSERA_HAS(api, PJRT_Buffer_IsDeleted)) return;
    for (size_t d = 0; d < nd; d++) {
      for (size_t i = 0; i < na; i++) {
        Args<PJRT_Buffer_IsDeleted_Args> del;
        del->buffer = args[d][i];
        PJRT_Error* err = api->PJRT_Buffer_IsDeleted(del.get());
        if (err != nullptr) TakeError(api, err, "PJRT_Buffer_IsDeleted");
        else deleted[d * na + i] = del->is_deleted ? 1 : 0;
      }
    }
  }

  // A flat array of output handles, [device * num_outputs + output]; when this call donated
  // arguments, the array also has a `donated` property: the flat [device * num_args + arg] indices.
  napi_value Result(napi_env env) {
    size_t no = exe->num_outputs;
    napi_value out;
    napi_create_array_with_length(env, outputs.size() * no, &out);
    for (size_t d = 0; d < outputs.size(); d++) {
      for (size_t i = 0; i < no; i++) {
        napi_set_element(env, out, static_cast<uint32_t>(d * no + i),
                         WrapBuffer(env, new Buffer(exe->api, outputs[d][i], exe->output_bytes[i])));
        outputs[d][i] = nullptr;
      }
    }
    napi_value donated = nullptr;
    uint32_t k = 0;
    for (size_t j = 0; j < deleted.size(); j++) {
      if (!deleted[j]) continue;
      if (donated == nullptr) napi_create_array(env, &donated);
      napi_set_element(env, donated, k++, MakeInt64(env, static_cast<int64_t>(j)));
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
    if (env == nullptr) return;
    if (call.failure.failed) napi_reject_deferred(env, deferred, ErrorValue(env, call.failure));
    else napi_resolve_deferred(env, deferred, call.Result(env));
    napi_delete_reference(env, keep);
    napi_delete_reference(env, keep_exe);
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

// execute(executable, argLists: buffer[][], nonDonatable: number[] | null, dispatch: boolean | number)
//   dispatch true: queue on the dispatcher thread -> Promise of the flat output handles (ExecCall::Result)
//   dispatch false: launch on this thread -> the flat output handles
//   dispatch N: launch on this thread if fewer than N executions are in flight -> the handles;
//               otherwise launch nothing and return null (the caller then queues)
static napi_value Execute(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Executable* x = argc >= 1 ? LiveExecutable(env, argv[0], "execute") : nullptr;
  if (x == nullptr) return nullptr;
  bool on_worker = false;
  int64_t limit = -1;
  napi_valuetype dispatch_type = napi_undefined;
  if (argc >= 4) napi_typeof(env, argv[3], &dispatch_type);
  if (dispatch_type == napi_boolean) {
    GetBool(env, argv[3], &on_worker);
  } else if (dispatch_type != napi_number || !GetInt64(env, argv[3], &limit) || limit < 0) {
    ThrowMessage(env, "execute", "expected (executable, argLists, nonDonatable, dispatch: boolean | limit)");
    return nullptr;
  }
  ExecCall call;
  call.exe = x;
  uint32_t nd = 0;
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (is_array) napi_get_array_length(env, argv[1], &nd);
  if (!is_array || nd != x->devices.size()) {
    ThrowMessage(env, "execute", "expected one argument list per device of the executable (" +
                                     std::to_string(x->devices.size()) + ")");
    return nullptr;
  }
  call.args.resize(nd);
  uint32_t na = 0;
  for (uint32_t d = 0; d < nd; d++) {
    napi_value list;
    uint32_t n = 0;
    napi_get_element(env, argv[1], d, &list);
    napi_get_array_length(env, list, &n);
    if (d == 0) na = n;
    if (n != na) {
      ThrowMessage(env, "execute", "argument lists differ in length between devices");
      return nullptr;
    }
    call.args[d].resize(n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value e;
      napi_get_element(env, list, i, &e);
      Buffer* b = UnwrapBuffer(env, e);
      if (b == nullptr) return nullptr;
      if (b->buffer == nullptr) {
        ThrowMessage(env, "execute", "argument " + std::to_string(i) + " on device " + std::to_string(d) +
                                         " has been disposed");
        return nullptr;
      }
      call.args[d][i] = b->buffer;
    }
  }
  if (!IsNullish(env, argv[2])) {
    if (!GetInt64Array(env, argv[2], &call.non_donatable)) {
      ThrowMessage(env, "execute", "nonDonatable must be an array of argument indices");
      return nullptr;
    }
    call.all_non_donatable = call.non_donatable.size() >= na;
  }
  DrainRetired(x->client);
  if (limit >= 0 && x->client->inflight.load() >= limit) {
    napi_value null;
    napi_get_null(env, &null);
    return null;
  }
  if (!on_worker) {
    call.Run();
    if (call.failure.failed) return ThrowFailure(env, call.failure), nullptr;
    return call.Result(env);
  }
  auto* task = new ExecTask();
  task->call = std::move(call);
  task->holds_loop = true;
  napi_value promise;
  napi_create_promise(env, &task->deferred, &promise);
  napi_create_reference(env, argv[1], 1, &task->keep);
  napi_create_reference(env, argv[0], 1, &task->keep_exe);
  HoldLoop(env, task);
  Client* client = x->client;
  if (client->dispatcher == nullptr) {
    client->dispatcher = new Dispatcher();
    std::thread(DispatchLoop, client->dispatcher).detach();
  }
  {
    std::lock_guard<std::mutex> lock(client->dispatcher->mu);
    client->dispatcher->queue.push_back(task);
  }
  client->dispatcher->cv.notify_one();
  return promise;
}

// inflight(client) -> number of executions launched and not complete; also frees fired events.
static napi_value Inflight(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Client* c = argc >= 1 ? UnwrapClient(env, argv[0]) : nullptr;
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
