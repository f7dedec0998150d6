// Plugins (dlopen once, never unload, initialize once), clients with create options, devices, memory stats.
#include <dlfcn.h>

#include <map>
#include <mutex>

#include "tessera_pjrt.h"

namespace tessera {

// Every function slot the runtime may call. The TypeScript side decides which are required.
#define TESSERA_SLOTS(X)                                                                             \
  X(PJRT_Error_Destroy) X(PJRT_Error_Message) X(PJRT_Error_GetCode) X(PJRT_Plugin_Initialize)        \
  X(PJRT_Plugin_Attributes) X(PJRT_Event_Destroy) X(PJRT_Event_OnReady) X(PJRT_Event_IsReady) X(PJRT_Event_Error)        \
  X(PJRT_Client_Create) X(PJRT_Client_PlatformName) X(PJRT_Client_PlatformVersion)                   \
  X(PJRT_Client_ProcessIndex) X(PJRT_Client_Devices) X(PJRT_Client_AddressableDevices)               \
  X(PJRT_Client_Compile) X(PJRT_Client_DefaultDeviceAssignment) X(PJRT_Client_BufferFromHostBuffer)  \
  X(PJRT_DeviceDescription_Id) X(PJRT_DeviceDescription_ProcessIndex) X(PJRT_DeviceDescription_Kind) \
  X(PJRT_DeviceDescription_DebugString) X(PJRT_DeviceDescription_ToString)                           \
  X(PJRT_Device_GetDescription) X(PJRT_Device_LocalHardwareId) X(PJRT_Device_MemoryStats)            \
  X(PJRT_Executable_Destroy) X(PJRT_Executable_Name) X(PJRT_Executable_NumReplicas)                  \
  X(PJRT_Executable_NumPartitions) X(PJRT_Executable_NumOutputs) X(PJRT_Executable_OptimizedProgram) \
  X(PJRT_Executable_Serialize) X(PJRT_Executable_OutputElementTypes)                                 \
  X(PJRT_Executable_OutputDimensions) X(PJRT_Executable_GetCompiledMemoryStats)                      \
  X(PJRT_Executable_Fingerprint) X(PJRT_LoadedExecutable_Destroy)                                    \
  X(PJRT_LoadedExecutable_GetExecutable) X(PJRT_LoadedExecutable_AddressableDevices)                 \
  X(PJRT_LoadedExecutable_Execute) X(PJRT_Executable_DeserializeAndLoad) X(PJRT_Buffer_Destroy)      \
  X(PJRT_Buffer_ElementType) X(PJRT_Buffer_Dimensions) X(PJRT_Buffer_OnDeviceSizeInBytes)            \
  X(PJRT_Buffer_IsDeleted) X(PJRT_Buffer_ToHostBuffer) X(PJRT_Buffer_ReadyEvent)                     \
  X(PJRT_Buffer_Device) X(PJRT_Buffer_CopyToDevice)

static std::mutex g_plugins_mu;
static std::map<const PJRT_Api*, Plugin*>* g_plugins = new std::map<const PJRT_Api*, Plugin*>();  // never freed

static napi_value NamedValueToJs(napi_env env, const PJRT_NamedValue& v) {
  switch (v.type) {
    case PJRT_NamedValue_kString:
      return MakeString(env, v.string_value, v.value_size);
    case PJRT_NamedValue_kInt64:
      return MakeInt64(env, v.int64_value);
    case PJRT_NamedValue_kInt64List: {
      napi_value r = MakeArray(env, v.value_size);
      for (size_t i = 0; i < v.value_size; i++) SetElement(env, r, i, MakeInt64(env, v.int64_array_value[i]));
      return r;
    }
    case PJRT_NamedValue_kFloat:
      return MakeDouble(env, v.float_value);
    case PJRT_NamedValue_kBool:
      return MakeBool(env, v.bool_value);
  }
  return Undefined(env);
}

// loadPlugin(path) -> { handle, path, apiMajor, apiMinor, apiStructSize, attributes, slots }
static napi_value LoadPlugin(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "loadPlugin");
  std::string path;
  if (!args.String(0, "path", &path)) return nullptr;
  Plugin* plugin = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_plugins_mu);
    // RTLD_LOCAL: plugins export only GetPjrtApi and may coexist (CPU and CUDA) in one process.
    void* dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (dl == nullptr) {
      const char* e = dlerror();
      ThrowMessage(env, "dlopen", std::string("cannot load PJRT plugin ") + path + ": " + (e ? e : "unknown error"));
      return nullptr;
    }
    using GetApiFn = const PJRT_Api* (*)();
    auto get_api = reinterpret_cast<GetApiFn>(dlsym(dl, "GetPjrtApi"));
    if (get_api == nullptr) {
      ThrowMessage(env, "dlsym", path + " is not a PJRT plugin: it exports no GetPjrtApi");
      return nullptr;  // no dlclose, by rule: a half-loaded XLA is not safe to unload either
    }
    const PJRT_Api* api = get_api();
    if (api == nullptr ||
        api->struct_size < offsetof(PJRT_Api, pjrt_api_version) + sizeof(PJRT_Api_Version)) {
      ThrowMessage(env, "GetPjrtApi", path + " returned no usable PJRT_Api");
      return nullptr;
    }
    auto found = g_plugins->find(api);
    if (found != g_plugins->end()) {
      plugin = found->second;  // dlopen of a loaded file returns the same library: initialize only once
    } else {
      if (api->pjrt_api_version.major_version != PJRT_API_MAJOR) {
        ThrowMessage(env, "GetPjrtApi",
                     path + " speaks PJRT C API " + std::to_string(api->pjrt_api_version.major_version) + "." +
                         std::to_string(api->pjrt_api_version.minor_version) + ", but this addon was built for major " +
                         std::to_string(PJRT_API_MAJOR) + " (header 0." + std::to_string(PJRT_API_MINOR) + ")");
        return nullptr;
      }
      Args<PJRT_Plugin_Initialize_Args> a;
      Failure f;
      if (!TESSERA_CALL(api, PJRT_Plugin_Initialize, a.get(), f)) {
        ThrowFailure(env, f);
        return nullptr;
      }
      plugin = new Plugin(path, dl, api);
      (*g_plugins)[api] = plugin;
    }
  }

  const PJRT_Api* api = plugin->api;
  napi_value out = MakeObject(env);
  SetProp(env, out, "handle", WrapPlugin(env, plugin));
  SetProp(env, out, "path", MakeString(env, plugin->path.data(), plugin->path.size()));
  SetProp(env, out, "apiMajor", MakeInt64(env, api->pjrt_api_version.major_version));
  SetProp(env, out, "apiMinor", MakeInt64(env, api->pjrt_api_version.minor_version));
  SetProp(env, out, "apiStructSize", MakeInt64(env, static_cast<int64_t>(api->struct_size)));

  napi_value attrs = MakeArray(env, 0);
  if (TESSERA_HAS(api, PJRT_Plugin_Attributes)) {
    Args<PJRT_Plugin_Attributes_Args> a;
    Failure f;
    if (TESSERA_CALL(api, PJRT_Plugin_Attributes, a.get(), f)) {
      for (size_t i = 0; i < a->num_attributes; i++) {
        const PJRT_NamedValue& v = a->attributes[i];
        napi_value pair = MakeObject(env);
        SetProp(env, pair, "name", MakeString(env, v.name, v.name_size));
        SetProp(env, pair, "value", NamedValueToJs(env, v));
        SetElement(env, attrs, i, pair);
      }
    }
  }
  SetProp(env, out, "attributes", attrs);

  napi_value slots = MakeObject(env);
#define TESSERA_SLOT_PROP(fn) SetProp(env, slots, #fn, MakeBool(env, TESSERA_HAS(api, fn)));
  TESSERA_SLOTS(TESSERA_SLOT_PROP)
#undef TESSERA_SLOT_PROP
  SetProp(env, out, "slots", slots);
  return out;
}

// ------------------------------------------------------------------------------ createClient

struct CreateClientJob : Job {
  const PJRT_Api* api;
  std::vector<std::string> names, strings;
  std::vector<std::vector<int64_t>> lists;
  std::vector<PJRT_NamedValue> values;
  std::unique_ptr<Client> client;  // its PJRT client is destroyed with it unless Finish hands it to JS

  void Run() override {
    Args<PJRT_Client_Create_Args> a;
    a->create_options = values.empty() ? nullptr : values.data();
    a->num_options = values.size();
    if (!TESSERA_CALL(api, PJRT_Client_Create, a.get(), failure)) return;
    client = std::make_unique<Client>(api, a->client);
    Args<PJRT_Client_AddressableDevices_Args> d;
    d->client = client->client.get();
    if (!TESSERA_CALL(api, PJRT_Client_AddressableDevices, d.get(), failure)) return;
    client->devices.assign(d->addressable_devices, d->addressable_devices + d->num_addressable_devices);
  }
  napi_value Finish(napi_env env) override {
    return WrapClient(env, client.release());  // clients live for the process, as their plugin does
  }
};

// Reads options[i] = {name, type, value} into job->values[i] (a PJRT_NamedValue pointing into the job's strings).
static bool ReadCreateOption(napi_env env, napi_value options, uint32_t i, CreateClientJob* job) {
  const char* op = "createClient";
  std::string at = "options[" + std::to_string(i) + "]";
  napi_value o = nullptr, name = nullptr, type = nullptr, value = nullptr;
  if (!NAPI_CHECK(env, napi_get_element(env, options, i, &o))) return false;
  napi_valuetype ot = napi_undefined;
  if (!NAPI_CHECK(env, napi_typeof(env, o, &ot))) return false;
  if (ot != napi_object) {
    ThrowTypeError(env, op, at + " must be an object {name, type, value}");
    return false;
  }
  if (!NAPI_CHECK(env, napi_get_named_property(env, o, "name", &name)) ||
      !NAPI_CHECK(env, napi_get_named_property(env, o, "type", &type)) ||
      !NAPI_CHECK(env, napi_get_named_property(env, o, "value", &value)))
    return false;
  std::string t;
  if (!ToString(env, name, op, at + ".name", &job->names[i]) || !ToString(env, type, op, at + ".type", &t)) return false;
  PJRT_NamedValue& v = job->values[i];
  std::memset(static_cast<void*>(&v), 0, sizeof(v));
  v.struct_size = PJRT_NamedValue_STRUCT_SIZE;  // array element: exact header size, see tessera_pjrt.h
  v.name = job->names[i].c_str();
  v.name_size = job->names[i].size();
  v.value_size = 1;
  std::string what = at + ".value";
  if (t == "string") {
    v.type = PJRT_NamedValue_kString;
    if (!ToString(env, value, op, what, &job->strings[i])) return false;
    v.string_value = job->strings[i].c_str();
    v.value_size = job->strings[i].size();
  } else if (t == "int64") {
    v.type = PJRT_NamedValue_kInt64;
    return ToInt64(env, value, op, what, &v.int64_value);
  } else if (t == "int64list") {
    v.type = PJRT_NamedValue_kInt64List;
    if (!ToInt64Array(env, value, op, what, &job->lists[i])) return false;
    v.int64_array_value = job->lists[i].data();
    v.value_size = job->lists[i].size();
  } else if (t == "float") {
    double d = 0;
    v.type = PJRT_NamedValue_kFloat;
    if (!ToDouble(env, value, op, what, &d)) return false;
    v.float_value = static_cast<float>(d);
  } else if (t == "bool") {
    v.type = PJRT_NamedValue_kBool;
    return ToBool(env, value, op, what, &v.bool_value);
  } else {
    ThrowTypeError(env, op, at + ".type must be one of string, int64, int64list, float, bool, got \"" + t + "\"");
    return false;
  }
  return true;
}

// createClient(plugin, options: {name, type, value}[]) -> Promise<client handle>
static napi_value CreateClient(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "createClient");
  Plugin* plugin = args.Get<Plugin>(0, "plugin");
  uint32_t n = 0;
  if (plugin == nullptr || !ToArrayLength(env, args[1], args.op(), "options", &n)) return nullptr;
  auto job = std::make_unique<CreateClientJob>();
  job->api = plugin->api;
  job->names.resize(n);
  job->strings.resize(n);
  job->lists.resize(n);
  job->values.resize(n);
  for (uint32_t i = 0; i < n; i++)
    if (!ReadCreateOption(env, args[1], i, job.get())) return nullptr;
  return StartJob(env, std::move(job), "tessera.createClient");
}

static bool DescribeDevice(napi_env env, const PJRT_Api* api, PJRT_Device* dev, napi_value* out, Failure* f) {
  Args<PJRT_Device_GetDescription_Args> g;
  g->device = dev;
  if (!TESSERA_CALL(api, PJRT_Device_GetDescription, g.get(), *f)) return false;
  PJRT_DeviceDescription* desc = g->device_description;
  *out = MakeObject(env);
  Args<PJRT_DeviceDescription_Id_Args> id;
  id->device_description = desc;
  if (!TESSERA_CALL(api, PJRT_DeviceDescription_Id, id.get(), *f)) return false;
  SetProp(env, *out, "id", MakeInt64(env, id->id));
  Args<PJRT_DeviceDescription_Kind_Args> kind;
  kind->device_description = desc;
  if (!TESSERA_CALL(api, PJRT_DeviceDescription_Kind, kind.get(), *f)) return false;
  SetProp(env, *out, "kind", MakeString(env, kind->device_kind, kind->device_kind_size));
  Failure ignored;
  Args<PJRT_DeviceDescription_ProcessIndex_Args> pi;
  pi->device_description = desc;
  if (TESSERA_CALL(api, PJRT_DeviceDescription_ProcessIndex, pi.get(), ignored))
    SetProp(env, *out, "processIndex", MakeInt64(env, pi->process_index));
  Args<PJRT_DeviceDescription_ToString_Args> ts;
  ts->device_description = desc;
  if (TESSERA_CALL(api, PJRT_DeviceDescription_ToString, ts.get(), ignored))
    SetProp(env, *out, "toString", MakeString(env, ts->to_string, ts->to_string_size));
  Args<PJRT_DeviceDescription_DebugString_Args> ds;
  ds->device_description = desc;
  if (TESSERA_CALL(api, PJRT_DeviceDescription_DebugString, ds.get(), ignored))
    SetProp(env, *out, "debugString", MakeString(env, ds->debug_string, ds->debug_string_size));
  Args<PJRT_Device_LocalHardwareId_Args> hw;
  hw->device = dev;
  if (TESSERA_CALL(api, PJRT_Device_LocalHardwareId, hw.get(), ignored))
    SetProp(env, *out, "localHardwareId", MakeInt64(env, hw->local_hardware_id));
  return true;
}

// clientInfo(client) -> { platformName, platformVersion, processIndex, deviceCount, devices[] }
static napi_value ClientInfo(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "clientInfo");
  Client* c = args.Get<Client>(0, "client");
  if (c == nullptr) return nullptr;
  const PJRT_Api* api = c->api;
  Failure f;
  napi_value out = MakeObject(env);
  Args<PJRT_Client_PlatformName_Args> pn;
  pn->client = c->client.get();
  if (!TESSERA_CALL(api, PJRT_Client_PlatformName, pn.get(), f)) return ThrowFailure(env, f), nullptr;
  SetProp(env, out, "platformName", MakeString(env, pn->platform_name, pn->platform_name_size));
  Args<PJRT_Client_PlatformVersion_Args> pv;
  pv->client = c->client.get();
  Failure ignored;
  if (TESSERA_CALL(api, PJRT_Client_PlatformVersion, pv.get(), ignored))
    SetProp(env, out, "platformVersion", MakeString(env, pv->platform_version, pv->platform_version_size));
  Args<PJRT_Client_ProcessIndex_Args> pi;
  pi->client = c->client.get();
  if (TESSERA_CALL(api, PJRT_Client_ProcessIndex, pi.get(), ignored))
    SetProp(env, out, "processIndex", MakeInt64(env, pi->process_index));
  Args<PJRT_Client_Devices_Args> all;
  all->client = c->client.get();
  if (TESSERA_CALL(api, PJRT_Client_Devices, all.get(), ignored))
    SetProp(env, out, "deviceCount", MakeInt64(env, static_cast<int64_t>(all->num_devices)));
  napi_value devices = MakeArray(env, c->devices.size());
  for (size_t i = 0; i < c->devices.size(); i++) {
    napi_value d = nullptr;
    if (!DescribeDevice(env, api, c->devices[i], &d, &f)) return ThrowFailure(env, f), nullptr;
    SetProp(env, d, "index", MakeInt64(env, static_cast<int64_t>(i)));
    SetElement(env, devices, i, d);
  }
  SetProp(env, out, "devices", devices);
  return out;
}

// defaultDeviceAssignment(client, numReplicas, numPartitions) -> number[] (device ids)
static napi_value DefaultDeviceAssignment(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "defaultDeviceAssignment");
  Client* c = args.Get<Client>(0, "client");
  int64_t r = 0, p = 0;
  if (c == nullptr || !args.Int64(1, "numReplicas", &r) || !args.Int64(2, "numPartitions", &p)) return nullptr;
  // A bound on the product keeps both within PJRT's int and the id array allocatable.
  constexpr int64_t kMaxDevices = 1 << 20;
  if (r < 1 || p < 1 || r > kMaxDevices || p > kMaxDevices || r * p > kMaxDevices) {
    ThrowMessage(env, args.op(), "expected positive numReplicas and numPartitions with a product of at most 2^20, got " +
                                     std::to_string(r) + " and " + std::to_string(p));
    return nullptr;
  }
  std::vector<int> ids(static_cast<size_t>(r * p));
  Args<PJRT_Client_DefaultDeviceAssignment_Args> a;
  a->client = c->client.get();
  a->num_replicas = static_cast<int>(r);
  a->num_partitions = static_cast<int>(p);
  a->default_assignment_size = ids.size();
  a->default_assignment = ids.data();
  Failure f;
  if (!TESSERA_CALL(c->api, PJRT_Client_DefaultDeviceAssignment, a.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_value out = MakeArray(env, ids.size());
  for (size_t i = 0; i < ids.size(); i++) SetElement(env, out, i, MakeInt64(env, ids[i]));
  return out;
}

// deviceMemoryStats(client, deviceIndex) -> { bytesInUse, peakBytesInUse?, bytesLimit?, ... }
static napi_value DeviceMemoryStats(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "deviceMemoryStats");
  Client* c = args.Get<Client>(0, "client");
  size_t idx = 0;
  if (c == nullptr || !args.Index(1, "deviceIndex", c->devices.size(), &idx)) return nullptr;
  Args<PJRT_Device_MemoryStats_Args> a;
  a->device = c->devices[idx];
  Failure f;
  if (!TESSERA_CALL(c->api, PJRT_Device_MemoryStats, a.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_value out = MakeObject(env);
  SetProp(env, out, "bytesInUse", MakeInt64(env, a->bytes_in_use));
#define TESSERA_STAT(field, name) \
  if (a->field##_is_set) SetProp(env, out, name, MakeInt64(env, a->field));
  TESSERA_STAT(peak_bytes_in_use, "peakBytesInUse")
  TESSERA_STAT(num_allocs, "numAllocs")
  TESSERA_STAT(largest_alloc_size, "largestAllocSize")
  TESSERA_STAT(bytes_limit, "bytesLimit")
  TESSERA_STAT(bytes_reserved, "bytesReserved")
  TESSERA_STAT(peak_bytes_reserved, "peakBytesReserved")
  TESSERA_STAT(bytes_reservable_limit, "bytesReservableLimit")
  TESSERA_STAT(largest_free_block_bytes, "largestFreeBlockBytes")
  TESSERA_STAT(pool_bytes, "poolBytes")
  TESSERA_STAT(peak_pool_bytes, "peakPoolBytes")
#undef TESSERA_STAT
  return out;
}

void RegisterClientFunctions(napi_env env, napi_value exports) {
  AddFunction(env, exports, "loadPlugin", LoadPlugin);
  AddFunction(env, exports, "createClient", CreateClient);
  AddFunction(env, exports, "clientInfo", ClientInfo);
  AddFunction(env, exports, "defaultDeviceAssignment", DefaultDeviceAssignment);
  AddFunction(env, exports, "deviceMemoryStats", DeviceMemoryStats);
}

}  // namespace tessera
