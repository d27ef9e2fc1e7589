/** A minimal typed event emitter. A listener that throws does not stop the others. */
export class Emitter<M extends object> {
  private readonly listeners = new Map<keyof M, Set<(arg: never) => void>>();

  on<K extends keyof M>(type: K, fn: (arg: M[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(fn as (arg: never) => void);
    return () => this.off(type, fn);
  }

  off<K extends keyof M>(type: K, fn: (arg: M[K]) => void): void {
    this.listeners.get(type)?.delete(fn as (arg: never) => void);
  }

  emit<K extends keyof M>(type: K, arg: M[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as (arg: M[K]) => void)(arg);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  count(type: keyof M): number {
    return this.listeners.get(type)?.size ?? 0;
  }
}
