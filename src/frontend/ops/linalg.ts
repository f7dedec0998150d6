// Contractions: dotGeneral (the IR op, dims checked up front), numpy matmul, and einsum lowered to dot_general.
import type { DType } from "../../ir/types.ts";
import { bind1, type Tensor } from "../core.ts";
import { TraceError } from "../errors.ts";
import { broadcastShapes, broadcastTo } from "./elementwise.ts";
import { normAxis, reshape, transpose } from "./shape.ts";
import { sum } from "./reduce.ts";
import { atUserLoc } from "../loc.ts";

export interface DotDims {
  lhsBatch?: readonly number[];
  rhsBatch?: readonly number[];
  lhsContract: readonly number[];
  rhsContract: readonly number[];
  /** Result (and accumulation) dtype; defaults to the operands' dtype. */
  outDtype?: DType;
}

function sameDtype(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) {
    throw new TraceError(op, `operand dtypes differ (${a.dtype} vs ${b.dtype}); convert one with astype`, [
      a.type,
      b.type,
    ]);
  }
}

/** XLA's dot_general: result dims are batch, lhs free, rhs free. Negative dims count from the end. */
export function dotGeneral(a: Tensor, b: Tensor, dims: DotDims): Tensor {
  sameDtype("dotGeneral", a, b);
  const na = (d: number) => normAxis("dotGeneral", d, a.ndim, a);
  const nb = (d: number) => normAxis("dotGeneral", d, b.ndim, b);
  return bind1("dot_general", [a, b], {
    lhsBatch: (dims.lhsBatch ?? []).map(na),
    rhsBatch: (dims.rhsBatch ?? []).map(nb),
    lhsContract: dims.lhsContract.map(na),
    rhsContract: dims.rhsContract.map(nb),
    outDtype: dims.outDtype ?? a.dtype,
  });
}

/**
 * numpy matmul: [..., m, k] @ [..., k, n] -> [..., m, n] with broadcast batch dims; a 1-D operand is a vector
 * (its dim is dropped from the result). A 2-D right operand (weights) contracts without broadcasting the batch.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return atUserLoc(() => {
    sameDtype("matmul", a, b);
    if (a.ndim === 0 || b.ndim === 0) throw new TraceError("matmul", "operands must have rank >= 1", [a.type, b.type]);
    const a2 = a.ndim === 1 ? reshape(a, [1, a.shape[0]!]) : a;
    const b2 = b.ndim === 1 ? reshape(b, [b.shape[0]!, 1]) : b;
    const ka = a2.shape[a2.ndim - 1]!,
      kb = b2.shape[b2.ndim - 2]!;
    if (ka !== kb) {
      throw new TraceError(
        "matmul",
        `contracting dims must match: lhs dim ${a.ndim - 1} = ${ka}, rhs dim ${Math.max(b.ndim - 2, 0)} = ${kb}`,
        [a.type, b.type],
      );
    }
    let r: Tensor;
    if (b2.ndim === 2) {
      r = dotGeneral(a2, b2, { lhsContract: [a2.ndim - 1], rhsContract: [0] });
    } else if (a2.ndim === 2) {
      // [m, ...batch, n] -> [...batch, m, n]
      const t = dotGeneral(a2, b2, { lhsContract: [1], rhsContract: [b2.ndim - 2] });
      const nb = b2.ndim - 2;
      r = transpose(t, [...Array.from({ length: nb }, (_, i) => i + 1), 0, nb + 1]);
    } else {
      const batch = broadcastShapes("matmul", [a2.shape.slice(0, -2), b2.shape.slice(0, -2)], [a.type, b.type]);
      const ab = broadcastTo(a2, [...batch, ...a2.shape.slice(-2)], "matmul");
      const bb = broadcastTo(b2, [...batch, ...b2.shape.slice(-2)], "matmul");
      const bd = batch.map((_, i) => i);
      r = dotGeneral(ab, bb, {
        lhsBatch: bd,
        rhsBatch: bd,
        lhsContract: [batch.length + 1],
        rhsContract: [batch.length],
      });
    }
    if (a.ndim === 1 || b.ndim === 1) {
      const shape = [...r.shape];
      if (b.ndim === 1) shape.pop();
      if (a.ndim === 1) shape.splice(shape.length - (b.ndim === 1 ? 1 : 2), 1);
      r = reshape(r, shape);
    }
    return r;
  });
}

// Labels standing for the dims an ellipsis covers, counted from the right so operands align like numpy.
const ELLIPSIS_BASE = 0x100;

function parseOperand(spec: string, term: string, x: Tensor): string[] {
  const parts = term.split("...");
  if (parts.length > 2) throw new TraceError("einsum", `"${spec}": more than one ... in "${term}"`, [x.type]);
  for (const p of parts) {
    if (!/^[a-zA-Z]*$/.test(p))
      throw new TraceError("einsum", `"${spec}": labels must be letters, got "${term}"`, [x.type]);
  }
  const explicit = parts.join("").length;
  if (parts.length === 1) {
    if (explicit !== x.ndim)
      throw new TraceError("einsum", `"${spec}": "${term}" has ${explicit} labels for rank ${x.ndim}`, [x.type]);
    return [...term];
  }
  const n = x.ndim - explicit;
  if (n < 0) throw new TraceError("einsum", `"${spec}": "${term}" has ${explicit} labels for rank ${x.ndim}`, [x.type]);
  const ell = Array.from({ length: n }, (_, i) => String.fromCharCode(ELLIPSIS_BASE + n - 1 - i));
  return [...parts[0]!, ...ell, ...parts[1]!];
}

/** Sums out the labels of `x` that `keep` does not contain. */
function sumOut(x: Tensor, labels: string[], keep: (l: string) => boolean): [Tensor, string[]] {
  const drop = labels.flatMap((l, i) => (keep(l) ? [] : [i]));
  if (drop.length === 0) return [x, labels];
  return [sum(x, drop), labels.filter((l) => keep(l))];
}

function contractPair(
  spec: string,
  a: Tensor,
  la: string[],
  b: Tensor,
  lb: string[],
  out: string[],
): [Tensor, string[]] {
  sameDtype("einsum", a, b);
  const inB = new Set(lb),
    inA = new Set(la),
    inOut = new Set(out);
  [a, la] = sumOut(a, la, (l) => inB.has(l) || inOut.has(l));
  [b, lb] = sumOut(b, lb, (l) => inA.has(l) || inOut.has(l));
  const shared = la.filter((l) => lb.includes(l));
  for (const l of shared) {
    const da = a.shape[la.indexOf(l)],
      db = b.shape[lb.indexOf(l)];
    if (da !== db)
      throw new TraceError(
        "einsum",
        `"${spec}": label ${showLabel(l)} has size ${da} in one operand and ${db} in the other`,
        [a.type, b.type],
      );
  }
  const batch = shared.filter((l) => inOut.has(l));
  const contract = shared.filter((l) => !inOut.has(l));
  const freeA = la.filter((l) => !lb.includes(l));
  const freeB = lb.filter((l) => !la.includes(l));
  const r = dotGeneral(a, b, {
    lhsBatch: batch.map((l) => la.indexOf(l)),
    rhsBatch: batch.map((l) => lb.indexOf(l)),
    lhsContract: contract.map((l) => la.indexOf(l)),
    rhsContract: contract.map((l) => lb.indexOf(l)),
  });
  return [r, [...batch, ...freeA, ...freeB]];
}

function showLabel(l: string): string {
  return l.charCodeAt(0) >= ELLIPSIS_BASE ? "... dim" : `'${l}'`;
}

/**
 * Einstein summation with an explicit output, e.g. `einsum("bsd,df->bsf", x, w)` or `einsum("...hd,...kd->...hk",
 * q, k)`. Each pair of operands becomes one dot_general (shared labels kept in the output are batch dims, shared
 * labels not kept are contracted), labels found in one operand only and not in the output are summed first, and a
 * final transpose puts the dims in output order. Repeated labels within one operand (diagonals) are not supported.
 */
export function einsum(spec: string, ...operands: Tensor[]): Tensor {
  return atUserLoc(() => {
    const s = spec.replace(/\s+/g, "");
    const arrow = s.indexOf("->");
    if (arrow < 0)
      throw new TraceError(
        "einsum",
        `"${spec}": give the output explicitly, as in "ij,jk->ik"`,
        operands.map((o) => o.type),
      );
    const terms = s.slice(0, arrow).split(",");
    if (terms.length !== operands.length) {
      throw new TraceError(
        "einsum",
        `"${spec}" names ${terms.length} operands, got ${operands.length}`,
        operands.map((o) => o.type),
      );
    }
    const maxEll = Math.max(
      0,
      ...terms.map((t, i) => (t.includes("...") ? operands[i]!.ndim - t.replace("...", "").length : 0)),
    );
    const labels = terms.map((t, i) => parseOperand(spec, t, operands[i]!));
    for (const [i, ls] of labels.entries()) {
      if (new Set(ls).size !== ls.length)
        throw new TraceError("einsum", `"${spec}": repeated label in "${terms[i]}" (diagonals are not supported)`, [
          operands[i]!.type,
        ]);
    }
    const outTerm = s.slice(arrow + 2);
    const outParts = outTerm.split("...");
    const out =
      outParts.length === 2
        ? [
            ...outParts[0]!,
            ...Array.from({ length: maxEll }, (_, i) => String.fromCharCode(ELLIPSIS_BASE + maxEll - 1 - i)),
            ...outParts[1]!,
          ]
        : [...outTerm];
    if (!/^[a-zA-Z]*$/.test(outParts.join(""))) throw new TraceError("einsum", `"${spec}": labels must be letters`);
    if (new Set(out).size !== out.length) throw new TraceError("einsum", `"${spec}": repeated label in the output`);
    for (const l of out) {
      if (!labels.some((ls) => ls.includes(l)))
        throw new TraceError(
          "einsum",
          `"${spec}": output label ${showLabel(l)} appears in no operand`,
          operands.map((o) => o.type),
        );
    }

    let acc = operands[0]!;
    let accLabels = labels[0]!;
    if (operands.length === 1) {
      [acc, accLabels] = sumOut(acc, accLabels, (l) => out.includes(l));
    }
    for (let i = 1; i < operands.length; i++) {
      // Keep what the output or a later operand still needs.
      const later = new Set([...out, ...labels.slice(i + 1).flat()]);
      [acc, accLabels] = contractPair(spec, acc, accLabels, operands[i]!, labels[i]!, [...later]);
    }
    [acc, accLabels] = sumOut(acc, accLabels, (l) => out.includes(l));
    return transpose(
      acc,
      out.map((l) => accLabels.indexOf(l)),
    );
  });
}
