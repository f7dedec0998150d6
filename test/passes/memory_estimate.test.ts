// estimateMemory against XLA CPU's compiled memory statistics: loop state updated in place, and the f32 copy of a loop's 16-bit operands.
import { describe, expect, it } from "vitest";
import { jit, tx, type Tensor, type TensorSpec } from "tessera";
import { getClient, PLUGINS } from "../../src/backend/runtime/index.ts";
import { pluginUpcasts16, type PluginName } from "../../src/backend/runtime/plugins.ts";
import { estimateMemory } from "../../src/passes/memory_estimate.ts";

const MiB = 2 ** 20;

/** XLA CPU's peak for a jitted f (argument + output - alias + temp bytes) beside Tessera's estimate of it. */
function lower(f: (...a: Tensor[]) => Tensor, specs: TensorSpec[]) {
  const j = jit(f);
  return j.lower(...(specs as unknown as Parameters<typeof j.lower>));
}

async function compare(f: (...a: Tensor[]) => Tensor, specs: TensorSpec[], plugin?: PluginName) {
  const lowered = lower(f, specs);
  const est = estimateMemory(lowered.graph, { donate: lowered.donate, cpuUpcast16: pluginUpcasts16(plugin) });
  const client = await getClient(plugin ? { plugin } : {});
  const exe = await client.compile(lowered.stablehlo, { device: client.devices[0]!.id });
  const m = exe.memoryStats!;
  exe.dispose();
  return { est, xla: m.argumentBytes + m.outputBytes - m.aliasBytes + m.tempBytes, temp: m.tempBytes };
}

describe("estimateMemory against XLA CPU", () => {
  it("a scan whose carry is written with dynamic_update_slice holds the carry once, not its init, result and update apart", async () => {
    // 16 MiB f32 accumulator, 64 row blocks each added to in place: flash attention's dq.
    const [R, C, n] = [4096, 1024, 64];
    const f = (x: Tensor) => {
      const [acc] = tx.scan(
        (acc: Tensor, i: Tensor) => {
          const start = i.mul(R / n);
          const old = tx.dynamicSlice(acc, [start, 0], [R / n, C]);
          const upd = old.add(tx.dynamicSlice(x, [start, 0], [R / n, C]).mul(2));
          return [tx.dynamicUpdateSlice(acc, upd, [start, 0]), null];
        },
        tx.zeros([R, C], "f32"),
        tx.arange(n),
      );
      return acc.sum();
    };
    const { est, xla, temp } = await compare(f, [tx.spec("f32", [R, C])]);
    console.log(
      `DUS carry: estimate ${(est.total / MiB).toFixed(2)} MiB (temporaries ${(est.temporaries / MiB).toFixed(2)}), XLA CPU ${(xla / MiB).toFixed(2)} MiB (temp ${(temp / MiB).toFixed(2)})`,
    );
    // One 16 MiB accumulator and small blocks: counting the init, the loop's result and the body's update as
    // three buffers would make it 48 MiB.
    expect(est.temporaries).toBeGreaterThanOrEqual(16 * MiB);
    expect(est.temporaries).toBeLessThan(18 * MiB);
    expect(Math.abs(est.total / xla - 1)).toBeLessThanOrEqual(0.15);
  });

  it("an init used again after the loop is copied: the carry then takes its own buffer", async () => {
    const [R, C, n] = [4096, 1024, 8];
    const f = (x: Tensor) => {
      const init = x.mul(3);
      const [acc] = tx.scan(
        (acc: Tensor, i: Tensor) => [
          tx.dynamicUpdateSlice(acc, tx.full([R / n, C], 1, "f32").mul(i.astype("f32")), [i.mul(R / n), 0]),
          null,
        ],
        init,
        tx.arange(n),
      );
      return acc.sum().add(init.sum());
    };
    const { est, xla } = await compare(f, [tx.spec("f32", [R, C])]);
    console.log(`init kept: estimate ${(est.total / MiB).toFixed(2)} MiB, XLA CPU ${(xla / MiB).toFixed(2)} MiB`);
    expect(est.temporaries).toBeGreaterThanOrEqual(32 * MiB);
    expect(Math.abs(est.total / xla - 1)).toBeLessThanOrEqual(0.15);
  });

  // Each catalogued plugin: the older XLA computes bf16 in an f32 copy, jaxlib 0.11.2's does not (cpuUpcasts16).
  it.each(Object.keys(PLUGINS) as PluginName[])(
    "%s: a scan's bf16 xs as XLA CPU holds them (the older XLA converts them to f32 once, before the loop)",
    async (plugin) => {
      // The Llama step's stacked layer inputs: a bf16 [L, R, C] temporary scanned over by the backward loop.
      const [L, R, C] = [16, 1024, 1024];
      const f = (x: Tensor, w: Tensor) => {
        const xs = x.astype("bf16").mul(2);
        const [acc] = tx.scan(
          (acc: Tensor, xi: Tensor) => [acc.add(xi.mul(w).astype("f32")), null],
          tx.zeros([R, C], "f32"),
          xs,
        );
        return acc.sum();
      };
      const specs = [tx.spec("f32", [L, R, C]), tx.spec("bf16", [R, C])];
      const cpu = await compare(f, specs, plugin);
      const gpu = estimateMemory(lower(f, specs).graph);
      console.log(
        `${plugin}: bf16 xs: CPU estimate ${(cpu.est.total / MiB).toFixed(2)} MiB, XLA CPU ${(cpu.xla / MiB).toFixed(2)} MiB; GPU estimate ${(gpu.total / MiB).toFixed(2)} MiB`,
      );
      // the 32 MiB bf16 stack becomes a 64 MiB f32 one on the older CPU backend, not on a GPU or the newer one
      if (PLUGINS[plugin].cpuUpcasts16) expect(cpu.est.total - gpu.total).toBeGreaterThanOrEqual(32 * MiB);
      else expect(cpu.est.total).toBe(gpu.total);
      expect(Math.abs(cpu.est.total / cpu.xla - 1)).toBeLessThanOrEqual(0.15);
    },
  );
});
