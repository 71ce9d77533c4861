/** A selector syntax error, naming the position (0-based offset) and what was expected there. */
export class SelectorError extends Error {
  constructor(
    readonly position: number,
    readonly expected: string,
    message: string,
  ) {
    super(message);
  }
}
