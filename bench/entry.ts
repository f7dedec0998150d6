// The entry of a bench file that measures Tessera in child processes (one per plugin): run as --child it prints its measurement as one JSON line, else the whole bench.
/**
 * Runs `child` when the file was started with --child (its result printed as one JSON line for the parent to
 * parse), else `main`; either way the process exits 0, or 1 with the stack when it throws.
 */
export function benchEntry(
  name: string,
  main: () => Promise<void>,
  child: (arg: string | undefined) => Promise<unknown>,
): void {
  const isChild = process.argv[2] === "--child";
  const run = isChild ? child(process.argv[3]).then((r) => console.log(JSON.stringify(r))) : main();
  run.then(
    () => process.exit(0),
    (e: unknown) => {
      const stack = (e as Error).stack ?? String(e);
      console.error(isChild ? stack : `bench ${name} failed: ${stack}`);
      process.exit(1);
    },
  );
}
