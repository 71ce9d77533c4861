/** Runs `fn` over `items` with at most `n` in flight; resolves to the errors (with their item). */
export async function eachLimited<T>(items: readonly T[], n: number, fn: (item: T) => Promise<unknown>): Promise<Array<{ item: T; error: unknown }>> {
  const errors: Array<{ item: T; error: unknown }> = [];
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const item = items[i++] as T;
      try {
        await fn(item);
      } catch (error) {
        errors.push({ item, error });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return errors;
}
