import { InMemoryState } from "../../src/state/in-memory-state";
import { describeStateConformance, describeStateLimits } from "./state.conformance";

describeStateConformance("InMemoryState", (clock) => new InMemoryState({ now: clock.now }));
describeStateLimits("InMemoryState", (clock, limits) => new InMemoryState({ now: clock.now, limits }));
