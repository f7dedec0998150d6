// The public training API, `import { train } from "tessera/train"`: a LoRA fine-tuning run as `tessera train` runs it.
// train(config, { onEvent, signal }): config is TrainConfigInput (validated by TrainConfigSchema, defaults filled
// in), events report progress, the result names the checkpoint, adapter and metrics written.
export { train, type TrainEvent, type TrainRunOptions, type TrainRunResult } from "./run.ts";
export { TrainConfigSchema, type TrainConfig, type TrainConfigInput } from "./config.ts";
// loadRunConfigFile(path) reads a run file (--config) as a TrainConfigInput; evaluate(config) scores a model (and
// adapter) on a data file as `tessera eval` does.
export { loadRunConfigFile } from "./config_file.ts";
export { evaluate, type EvalConfig } from "./eval_run.ts";
export type { EvalResult } from "./evaluate.ts";
