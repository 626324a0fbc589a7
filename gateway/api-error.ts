import { KvError } from '../common/errors';

export type ApiErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'unavailable'
  | 'not_ready'
  | 'not_implemented'
  | 'internal';

/** An error meant for the client: the status and a JSON body `{ error: { code, message } }`. */
export class ApiError extends KvError {
  constructor(
    readonly status: number,
    readonly apiCode: ApiErrorCode,
    message: string,
    context: Record<string, unknown> = {},
  ) {
    super(apiCode, message, context);
  }

  toBody(): { error: { code: ApiErrorCode; message: string } } {
    return { error: { code: this.apiCode, message: this.message } };
  }
}
