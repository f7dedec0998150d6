// A caching allocator for a CPU plugin's large host buffers, installed by rebinding the plugin's GOT slots.
//
// XLA's CPU runtime takes every buffer of an execution (arguments aside) from posix_memalign/aligned_alloc and frees
// it when the execution ends. glibc serves blocks over 32 MiB, and on worker threads' arenas most large blocks, with
// a fresh mmap, so each training step page-faults all of its activations in again: 1.6 GB, ~400k faults, ~10% of a
// SmolLM2 LoRA step. XLA's GPU runtime keeps a caching (BFC) allocator for device memory; the CPU plugins have none
// and take no allocator option, and malloc tunables (GLIBC_TUNABLES, LD_PRELOAD) only act at process start, which
// a library loaded into Node does not control. So the plugin's own import slots for the allocation functions are
// pointed at the wrappers below: blocks of kMinBytes or more go back to an idle pool on free (not to glibc, which
// would unmap them) and serve the next request of (nearly) the same size without a fault. The blocks themselves
// come from glibc, so each stays a valid chunk to it. Everything else, and every pointer not ours, passes through
// to the functions the slots held. Only this plugin's calls are rebound; its libstdc++ keeps glibc's (the plugin
// never frees through another library what it allocated itself, and the reverse is passed on).
//
// Memory bound: before taking a new block the pool evicts idle blocks, least recently freed first, until live +
// idle + the new block fit in the largest live total seen so far, so the process maps no more than glibc would
// have at its peak. A repeated program (a training step) then finds every block in the pool.
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <unordered_map>

#include "tessera_pjrt.h"

namespace tessera {
namespace {

constexpr size_t kMinBytes = size_t{1} << 20;  // smaller blocks are cheap for glibc (its heaps keep them mapped)
constexpr size_t kPage = 4096;

using PosixMemalign = int (*)(void**, size_t, size_t);
using AlignedAlloc = void* (*)(size_t, size_t);
using Free = void (*)(void*);
using Realloc = void* (*)(void*, size_t);

// The functions the rebound slots held (glibc's). One set for every plugin: they all resolve to the same libc.
PosixMemalign g_posix_memalign = nullptr;
AlignedAlloc g_aligned_alloc = nullptr;
Free g_free = nullptr;
Realloc g_realloc = nullptr;

struct Pool {
  std::mutex mu;
  std::unordered_map<void*, size_t> live;  // our blocks in use: address -> mapped size
  std::multimap<size_t, std::pair<void*, uint64_t>> idle;  // size -> (address, the tick it was freed at)
  size_t live_bytes = 0, idle_bytes = 0, peak_live = 0;
  uint64_t tick = 0, hits = 0, misses = 0, evictions = 0;
};
Pool* g_pool = new Pool();  // never freed: plugin threads may free blocks during process exit

size_t RoundUp(size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

// A block of at least n bytes, page-aligned; nullptr when there is no memory.
void* Take(size_t n) {
  n = RoundUp(n);
  Pool& p = *g_pool;
  std::lock_guard<std::mutex> lock(p.mu);
  // The smallest idle block that fits, unless it would waste more than an eighth of the request.
  auto it = p.idle.lower_bound(n);
  if (it != p.idle.end() && it->first <= n + n / 8) {
    const size_t size = it->first;
    void* block = it->second.first;
    p.idle.erase(it);
    p.idle_bytes -= size;
    p.live.emplace(block, size);
    p.live_bytes += size;
    p.hits++;
    return block;
  }
  // Evict least recently freed idle blocks until the mapping stays within the peak live total.
  const size_t bound = std::max(p.peak_live, p.live_bytes + n);
  while (p.idle_bytes > 0 && p.live_bytes + p.idle_bytes + n > bound) {
    auto oldest = p.idle.begin();
    for (auto j = p.idle.begin(); j != p.idle.end(); ++j)
      if (j->second.second < oldest->second.second) oldest = j;
    g_free(oldest->second.first);
    p.idle_bytes -= oldest->first;
    p.idle.erase(oldest);
    p.evictions++;
  }
  // From glibc itself, page-aligned: a block that somehow reached glibc's free directly (a copy of &free taken
  // before the slots were rebound) is then still a valid chunk to it, not a corrupted heap.
  void* block = nullptr;
  if (g_posix_memalign(&block, kPage, n) != 0) return nullptr;
  p.live.emplace(block, n);
  p.live_bytes += n;
  p.peak_live = std::max(p.peak_live, p.live_bytes);
  p.misses++;
  return block;
}

// Returns block to the pool and says true when it is ours; false leaves it to glibc.
bool Give(void* block) {
  if (block == nullptr || (reinterpret_cast<uintptr_t>(block) & (kPage - 1)) != 0) return false;
  Pool& p = *g_pool;
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.live.find(block);
  if (it == p.live.end()) return false;
  p.idle.emplace(it->second, std::make_pair(block, ++p.tick));
  p.idle_bytes += it->second;
  p.live_bytes -= it->second;
  p.live.erase(it);
  return true;
}

size_t SizeOf(void* block) {
  if ((reinterpret_cast<uintptr_t>(block) & (kPage - 1)) != 0) return 0;
  std::lock_guard<std::mutex> lock(g_pool->mu);
  auto it = g_pool->live.find(block);
  return it == g_pool->live.end() ? 0 : it->second;
}

int CachedPosixMemalign(void** out, size_t alignment, size_t n) {
  if (n < kMinBytes || alignment > kPage) return g_posix_memalign(out, alignment, n);
  void* block = Take(n);
  if (block == nullptr) return ENOMEM;
  *out = block;
  return 0;
}

void* CachedAlignedAlloc(size_t alignment, size_t n) {
  if (n < kMinBytes || alignment > kPage) return g_aligned_alloc(alignment, n);
  void* block = Take(n);
  if (block == nullptr) errno = ENOMEM;
  return block;
}

void CachedFree(void* block) {
  if (!Give(block)) g_free(block);
}

// realloc of one of our blocks moves it into glibc's memory (XLA does not realloc its buffers; this is for safety).
void* CachedRealloc(void* block, size_t n) {
  const size_t had = block == nullptr ? 0 : SizeOf(block);
  if (had == 0) return g_realloc(block, n);
  void* moved = g_realloc(nullptr, n);
  if (moved == nullptr) return nullptr;
  std::memcpy(moved, block, std::min(had, n));
  Give(block);
  return moved;
}

struct Relro {
  uintptr_t lo = 0, hi = 0;
  ElfW(Addr) base = 0;
};

int FindRelro(struct dl_phdr_info* info, size_t, void* data) {
  auto* r = static_cast<Relro*>(data);
  if (info->dlpi_addr != r->base) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_GNU_RELRO) {
      r->lo = info->dlpi_addr + ph.p_vaddr;
      r->hi = r->lo + ph.p_memsz;
    }
  }
  return 1;
}

// Points each of the library's GOT slots for `name` at `to`; returns the previous target (nullptr: no slot).
// The dynamic section's addresses are absolute once ld.so has relocated it (x86-64 glibc), relative otherwise.
void* Rebind(const link_map* lm, const Relro& relro, const char* name, void* to, std::string* error) {
  const ElfW(Sym)* symtab = nullptr;
  const char* strtab = nullptr;
  const ElfW(Rela)* tables[2] = {nullptr, nullptr};
  size_t sizes[2] = {0, 0};
  auto addr = [&](ElfW(Addr) a) { return a < lm->l_addr ? a + lm->l_addr : a; };
  for (const ElfW(Dyn)* d = lm->l_ld; d->d_tag != DT_NULL; d++) {
    switch (d->d_tag) {
      case DT_SYMTAB: symtab = reinterpret_cast<const ElfW(Sym)*>(addr(d->d_un.d_ptr)); break;
      case DT_STRTAB: strtab = reinterpret_cast<const char*>(addr(d->d_un.d_ptr)); break;
      case DT_JMPREL: tables[0] = reinterpret_cast<const ElfW(Rela)*>(addr(d->d_un.d_ptr)); break;
      case DT_PLTRELSZ: sizes[0] = d->d_un.d_val; break;
      case DT_RELA: tables[1] = reinterpret_cast<const ElfW(Rela)*>(addr(d->d_un.d_ptr)); break;
      case DT_RELASZ: sizes[1] = d->d_un.d_val; break;
      default: break;
    }
  }
  if (symtab == nullptr || strtab == nullptr) {
    *error = "no dynamic symbol table";
    return nullptr;
  }
  void* previous = nullptr;
  for (int t = 0; t < 2; t++) {
    for (size_t i = 0; tables[t] != nullptr && i < sizes[t] / sizeof(ElfW(Rela)); i++) {
      const ElfW(Rela)& r = tables[t][i];
      const auto type = ELF64_R_TYPE(r.r_info);
      if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) continue;
      if (std::strcmp(strtab + symtab[ELF64_R_SYM(r.r_info)].st_name, name) != 0) continue;
      auto* slot = reinterpret_cast<void**>(lm->l_addr + r.r_offset);
      const uintptr_t page = reinterpret_cast<uintptr_t>(slot) & ~(kPage - 1);
      const bool read_only = page >= (relro.lo & ~(kPage - 1)) && page < relro.hi;
      // Writable first in any case: a slot outside the RELRO range is already writable, so this changes nothing.
      if (mprotect(reinterpret_cast<void*>(page), kPage, PROT_READ | PROT_WRITE) != 0) {
        *error = std::string("cannot make the GOT slot of ") + name + " writable";
        return nullptr;
      }
      previous = __atomic_exchange_n(slot, to, __ATOMIC_SEQ_CST);
      if (read_only) mprotect(reinterpret_cast<void*>(page), kPage, PROT_READ);
    }
  }
  return previous;
}

std::mutex g_install_mu;
std::vector<void*> g_installed;  // plugin dl handles

// cacheHostAllocations(plugin) -> boolean: whether the plugin's large allocations now go through the pool (false:
// it imports none of the functions, e.g. a statically linked allocator). Throws when a slot cannot be rebound.
napi_value CacheHostAllocations(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "cacheHostAllocations");
  Plugin* plugin = args.Get<Plugin>(0, "plugin");
  if (plugin == nullptr) return nullptr;
  std::lock_guard<std::mutex> lock(g_install_mu);
  if (std::find(g_installed.begin(), g_installed.end(), plugin->dl) != g_installed.end()) return MakeBool(env, true);
#if !defined(__x86_64__) || !defined(__linux__)
  return MakeBool(env, false);
#else
  link_map* lm = nullptr;
  if (dlinfo(plugin->dl, RTLD_DI_LINKMAP, &lm) != 0 || lm == nullptr) {
    ThrowMessage(env, "cacheHostAllocations", plugin->path + ": dlinfo found no link map");
    return nullptr;
  }
  Relro relro;
  relro.base = lm->l_addr;
  dl_iterate_phdr(FindRelro, &relro);
  // The pass-through targets first, so that no wrapper can run before they are set.
  if (g_free == nullptr) {
    g_posix_memalign = reinterpret_cast<PosixMemalign>(dlsym(RTLD_DEFAULT, "posix_memalign"));
    g_aligned_alloc = reinterpret_cast<AlignedAlloc>(dlsym(RTLD_DEFAULT, "aligned_alloc"));
    g_realloc = reinterpret_cast<Realloc>(dlsym(RTLD_DEFAULT, "realloc"));
    g_free = reinterpret_cast<Free>(dlsym(RTLD_DEFAULT, "free"));
  }
  std::string error;
  // free and realloc before the allocators: a block of ours must never reach glibc's free.
  const std::pair<const char*, void*> wrappers[] = {
      {"free", reinterpret_cast<void*>(&CachedFree)},
      {"realloc", reinterpret_cast<void*>(&CachedRealloc)},
      {"posix_memalign", reinterpret_cast<void*>(&CachedPosixMemalign)},
      {"aligned_alloc", reinterpret_cast<void*>(&CachedAlignedAlloc)},
  };
  bool frees = false, allocates = false;
  for (const auto& [name, to] : wrappers) {
    void* previous = Rebind(lm, relro, name, to, &error);
    if (!error.empty()) {
      ThrowMessage(env, "cacheHostAllocations", plugin->path + ": " + error);
      return nullptr;
    }
    if (previous != nullptr && name[0] == 'f') frees = true;
    if (previous != nullptr && name[0] != 'f' && name[0] != 'r') allocates = true;
  }
  if (allocates && !frees) {
    ThrowMessage(env, "cacheHostAllocations", plugin->path + " allocates through posix_memalign but imports no free");
    return nullptr;
  }
  g_installed.push_back(plugin->dl);
  return MakeBool(env, allocates);
#endif
}

// hostAllocStats() -> { hits, misses, evictions, liveBytes, idleBytes, peakLiveBytes }
napi_value HostAllocStats(napi_env env, napi_callback_info) {
  Pool& p = *g_pool;
  std::lock_guard<std::mutex> lock(p.mu);
  napi_value o = MakeObject(env);
  SetProp(env, o, "hits", MakeInt64(env, static_cast<int64_t>(p.hits)));
  SetProp(env, o, "misses", MakeInt64(env, static_cast<int64_t>(p.misses)));
  SetProp(env, o, "evictions", MakeInt64(env, static_cast<int64_t>(p.evictions)));
  SetProp(env, o, "liveBytes", MakeInt64(env, static_cast<int64_t>(p.live_bytes)));
  SetProp(env, o, "idleBytes", MakeInt64(env, static_cast<int64_t>(p.idle_bytes)));
  SetProp(env, o, "peakLiveBytes", MakeInt64(env, static_cast<int64_t>(p.peak_live)));
  return o;
}

}  // namespace

void RegisterHostAllocFunctions(napi_env env, napi_value exports) {
  AddFunction(env, exports, "cacheHostAllocations", CacheHostAllocations);
  AddFunction(env, exports, "hostAllocStats", HostAllocStats);
}

}  // namespace tessera
