// Values as numpy's str() writes them (what jax.debug.print shows): array2string's layout, float modes and summary.
import type { DType } from "../ir/types.ts";

/*
 * Followed from numpy 2.x arrayprint.py with its defaults (precision 8, floatmode "maxprec", linewidth 75,
 * threshold 1000, edgeitems 3), so that a JAX user reads the same text. Floats are shortest-round-trip as float32
 * (bf16 and f16 values are widened to f32 first, so they print as their exact f32 value).
 */
const PRECISION = 8;
const LINE_WIDTH = 75;
const THRESHOLD = 1000;
const EDGE_ITEMS = 3;

const isFloatType = (d: DType) => d === "f32" || d === "bf16" || d === "f16";

/** Shortest decimal digits that read back as the same float32: `d.ddd × 10^exp`, digits without the point. */
function shortest(x: number): { digits: string; exp: number } {
  if (x === 0) return { digits: "0", exp: 0 };
  const a = Math.abs(x);
  let s = a.toExponential(8);
  for (let p = 1; p <= 9; p++) {
    const t = a.toExponential(p - 1);
    if (Math.fround(Number(t)) === Math.fround(a)) {
      s = t;
      break;
    }
  }
  const [mant, e] = s.split("e") as [string, string];
  return { digits: mant.replace(".", "").replace(/0+$/, "") || "0", exp: Number(e) };
}

/** Positional: [int part with sign, fraction digits], trailing zeros trimmed; at most `maxFrac` fraction digits. */
function positional(x: number, maxFrac: number): [string, string] {
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  const { digits, exp } = shortest(x);
  let int: string, frac: string;
  if (exp >= 0) {
    const padded = digits.padEnd(exp + 1, "0");
    int = padded.slice(0, exp + 1);
    frac = padded.slice(exp + 1);
  } else {
    int = "0";
    frac = "0".repeat(-exp - 1) + digits;
  }
  if (frac.length > maxFrac) {
    // More digits than the precision allows: round the value itself, as dragon4 does with a cutoff.
    const r = Math.abs(x).toFixed(maxFrac);
    [int, frac] = r.split(".") as [string, string];
  }
  return [sign + int, frac.replace(/0+$/, "")];
}

/** Scientific: [mantissa int part with sign, mantissa fraction digits, exponent with sign, e.g. "+07"]. */
function scientific(x: number): [string, string, string] {
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  const { digits, exp } = shortest(x);
  const e = `${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  return [sign + digits[0]!, digits.slice(1), e];
}

function nonFinite(x: number): string {
  return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
}

/** numpy's scalar str(): `0.5`, `1.0`, `1e-05`, `1.2345678e+07`, `-3`, `True`. */
export function formatScalar(dtype: DType, x: number): string {
  if (dtype === "bool") return x ? "True" : "False";
  if (!isFloatType(dtype)) return String(x);
  if (!Number.isFinite(x)) return nonFinite(x);
  const a = Math.abs(x);
  // numpy switches at 10^precision of the type (float32: 6) and below 1e-4.
  if (x === 0 || (a >= 1e-4 && a < 1e6)) {
    const [int, frac] = positional(x, 17);
    return `${int}.${frac || "0"}`;
  }
  const [int, frac, e] = scientific(x);
  return `${int}${frac ? `.${frac}` : ""}e${e}`;
}

/** numpy's element formatter for one array: every element padded to one width (FloatingFormat, IntegerFormat, BoolFormat). */
function elementFormat(dtype: DType, shown: readonly number[]): (x: number) => string {
  if (dtype === "bool") return (x) => (x ? " True" : "False");
  if (!isFloatType(dtype)) {
    const width = shown.reduce((w, x) => Math.max(w, String(x).length), 0);
    return (x) => String(x).padStart(width);
  }
  const finite = shown.filter(Number.isFinite);
  const nonzero = finite.filter((x) => x !== 0).map(Math.abs);
  const max = nonzero.length ? Math.max(...nonzero) : 0;
  const min = nonzero.length ? Math.min(...nonzero) : 0;
  const expMode = nonzero.length > 0 && (max >= 1e8 || min < 1e-4 || max / min > 1000);
  let padLeft = 0,
    padRight = 0;
  let fmt: (x: number) => string;
  if (expMode) {
    const parts = finite.map(scientific);
    const precision = parts.reduce((m, p) => Math.max(m, p[1].length), 0);
    const expSize = parts.reduce((m, p) => Math.max(m, p[2].length - 1), 0);
    padLeft = parts.reduce((m, p) => Math.max(m, p[0].length), 0);
    padRight = expSize + 2 + precision;
    fmt = (x) => {
      const [int, frac, e] = scientific(x);
      return `${int.padStart(padLeft)}.${frac.padEnd(precision, "0")}e${e[0]}${e.slice(1).padStart(expSize, "0")}`;
    };
  } else {
    const parts = finite.map((x) => positional(x, PRECISION));
    padLeft = parts.reduce((m, p) => Math.max(m, p[0].length), 0);
    padRight = parts.reduce((m, p) => Math.max(m, p[1].length), 0);
    fmt = (x) => {
      const [int, frac] = positional(x, PRECISION);
      return `${int.padStart(padLeft)}.${frac.padEnd(padRight)}`;
    };
  }
  if (finite.length !== shown.length) {
    const negInf = shown.some((x) => x === Number.NEGATIVE_INFINITY);
    padLeft = Math.max(padLeft, 3 - (padRight + 1), 3 + (negInf ? 1 : 0) - (padRight + 1));
  }
  return (x) => (Number.isFinite(x) ? fmt(x) : nonFinite(x).padStart(padLeft + padRight + 1));
}

/**
 * An array as numpy's str() gives it: `[0.5  1.25 3.  ]`, rows on their own lines, lines wrapped at 75 columns,
 * and arrays of more than 1000 elements summarized with `...` (3 items at each edge). A rank-0 array is its scalar.
 */
export function formatArray(dtype: DType, data: ArrayLike<number>, shape: readonly number[]): string {
  if (shape.length === 0) return formatScalar(dtype, data[0]!);
  if (shape.some((d) => d === 0)) return "[]";
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const summarize = data.length > THRESHOLD;
  // Indices kept along each axis (numpy's _leading_trailing): the element format sees only what is shown.
  const kept = shape.map((d) =>
    summarize && d > 2 * EDGE_ITEMS
      ? [...Array(EDGE_ITEMS).keys(), ...Array.from({ length: EDGE_ITEMS }, (_, i) => d - EDGE_ITEMS + i)]
      : [...Array(d).keys()],
  );
  const shown: number[] = [];
  const collect = (axis: number, off: number): void => {
    if (axis === shape.length) {
      shown.push(data[off]!);
      return;
    }
    for (const i of kept[axis]!) collect(axis + 1, off + i * strides[axis]!);
  };
  collect(0, 0);
  const fmt = elementFormat(dtype, shown);

  const extend = (s: string, line: string, word: string, width: number, indent: string): [string, string] => {
    let wrap = line.length + word.length > width;
    if (line.length <= indent.length) wrap = false;
    if (wrap) {
      s += `${line.trimEnd()}\n`;
      line = indent;
    }
    return [s, line + word];
  };
  const recurse = (axis: number, off: number, indent: string, width: number): string => {
    if (axis === shape.length) return fmt(data[off]!);
    const nextIndent = `${indent} `;
    const nextWidth = width - 1;
    const n = shape[axis]!;
    const showSummary = summarize && 2 * EDGE_ITEMS < n;
    const lead = showSummary ? EDGE_ITEMS : 0;
    const trail = showSummary ? EDGE_ITEMS : n;
    const at = (i: number) => off + (i < 0 ? n + i : i) * strides[axis]!;
    let s = "";
    if (axis === shape.length - 1) {
      const elemWidth = width - 1;
      let line = indent;
      for (let i = 0; i < lead; i++) {
        [s, line] = extend(s, line, recurse(axis + 1, at(i), nextIndent, nextWidth), elemWidth, indent);
        line += " ";
      }
      if (showSummary) {
        [s, line] = extend(s, line, "...", elemWidth, indent);
        line += " ";
      }
      for (let i = trail; i > 1; i--) {
        [s, line] = extend(s, line, recurse(axis + 1, at(-i), nextIndent, nextWidth), elemWidth, indent);
        line += " ";
      }
      [s, line] = extend(s, line, recurse(axis + 1, at(-1), nextIndent, nextWidth), elemWidth, indent);
      s += line;
    } else {
      const sep = "\n".repeat(shape.length - axis - 1);
      for (let i = 0; i < lead; i++) s += indent + recurse(axis + 1, at(i), nextIndent, nextWidth) + sep;
      if (showSummary) s += `${indent}...${sep}`;
      for (let i = trail; i > 1; i--) s += indent + recurse(axis + 1, at(-i), nextIndent, nextWidth) + sep;
      s += indent + recurse(axis + 1, at(-1), nextIndent, nextWidth);
    }
    return `[${s.slice(indent.length)}]`;
  };
  return recurse(0, 0, " ", LINE_WIDTH);
}
