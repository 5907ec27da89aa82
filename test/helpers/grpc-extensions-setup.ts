/**
 * Jest setupFiles: every test file's grpc-js gets the extensions, as the flower-* daemons' does
 * (src/cli/* call enableGrpcExtensions). Tests of the unextended grpc-js run a child process
 * (test/transport/grpc-extensions.test.ts).
 */
import { enableGrpcExtensions } from "../../src/transport/grpc-extensions";

enableGrpcExtensions();
