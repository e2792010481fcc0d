// The slice of the WebAssembly JS API linen uses. @types/node 20 does not declare it, and
// pulling in the DOM library for it would bring the whole browser into scope.
declare namespace WebAssembly {
  interface MemoryDescriptor { initial: number; maximum?: number; shared?: boolean }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  interface GlobalDescriptor { value: string; mutable?: boolean }
  class Global {
    constructor(descriptor: GlobalDescriptor, v?: unknown);
    value: unknown;
  }
  class Module {
    constructor(bytes: ArrayBufferView | ArrayBuffer);
  }
  type ExportValue = Function | Global | Memory | unknown;
  type Exports = Record<string, ExportValue>;
  type Imports = Record<string, Record<string, unknown>>;
  class Instance {
    constructor(module: Module, imports?: Imports);
    readonly exports: Exports;
  }
  function validate(bytes: ArrayBufferView | ArrayBuffer): boolean;
}
