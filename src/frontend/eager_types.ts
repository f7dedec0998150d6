// Types only: the signature an op has on device arrays outside a trace, where eager.ts runs it and returns DeviceArrays.
import type { DeviceArray } from "./array.ts";
import type { Tensor } from "./core.ts";
import type { Concrete } from "./jit.ts";

/** An argument as an eager call passes it: Tensors (also in arrays, tuples and option objects) as DeviceArrays. */
export type EagerArg<T> = T extends Tensor
  ? DeviceArray
  : T extends (...a: never[]) => unknown
    ? T
    : T extends object
      ? { [K in keyof T]: EagerArg<T[K]> }
      : T;

/** A result as an eager call returns it: Tensors (also in arrays and tuples) as DeviceArrays. */
export type EagerResult<R> = R extends Tensor
  ? DeviceArray
  : R extends readonly unknown[]
    ? { [K in keyof R]: EagerResult<R[K]> }
    : R;

/**
 * An op's type with a first overload for eager calls: given DeviceArrays (and numbers where it takes them) it returns
 * DeviceArrays; given traced Tensors (a DeviceArray is also a Tensor, so a mix lands here) it returns Tensors.
 */
export type Eager<F> = F extends (...a: infer A) => infer R ? ((...a: EagerArg<A>) => EagerResult<R>) & F : F;

/** The same function, typed with its eager overload (no wrapper: eager dispatch happens inside the op's bind). */
export const eagerTyped = <F>(f: F): Eager<F> => f as Eager<F>;

/**
 * cond with its eager overload: a device-array predicate means a call outside a trace, which eager.ts traces,
 * compiles and runs, so the branches' Tensors come back as DeviceArrays. A traced or boolean predicate: as cond.
 */
export interface EagerCond {
  <A extends unknown[], R>(
    pred: DeviceArray,
    trueFn: (...operands: A) => R,
    falseFn: (...operands: A) => R,
    ...operands: A
  ): Concrete<R>;
  <A extends unknown[], R>(
    pred: Tensor | boolean,
    trueFn: (...operands: A) => R,
    falseFn: (...operands: A) => R,
    ...operands: A
  ): R;
}

/** switchCase with its eager overload, told apart by a device-array index as EagerCond is by its predicate. */
export interface EagerSwitch {
  <A extends unknown[], R>(
    index: DeviceArray,
    branches: readonly ((...operands: A) => R)[],
    ...operands: A
  ): Concrete<R>;
  <A extends unknown[], R>(index: Tensor | number, branches: readonly ((...operands: A) => R)[], ...operands: A): R;
}
